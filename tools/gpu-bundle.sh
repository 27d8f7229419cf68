#!/usr/bin/env bash
# Builds the GPU check bundle: `histodiff` and `bench` in release with the Swift runtime linked statically, every
# shared library they load (glibc and its loader included, so the bundle runs on any x86-64 Linux with an older or
# newer glibc), the PyTorch peer's scripts and tools/gpu-check.sh as run.sh. The folder holds run.sh and one
# xz-compressed payload, so that it travels within the device tool's 64 MiB; run.sh unpacks it to a temporary folder.
#
# Usage: tools/gpu-bundle.sh [OUT]      (default OUT: gpu-bundle; the build goes to .build-bundle)
# Then, on the GPU machine: OUT/run.sh RESULTS_FOLDER    (README.md, "The GPU check")
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-bundle}
scratch=.build-bundle
tools/install-deps.sh
for product in histodiff bench; do
    swift build -c release --static-swift-stdlib --scratch-path "$scratch" --product "$product"
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/libexec" "$stage/lib" "$stage/python/benchmarks" "$stage/python/tools/fixtures"
for product in histodiff bench; do
    install -m 755 "$scratch/release/$product" "$stage/libexec/$product"
    strip "$stage/libexec/$product"
    # The bundled loader runs the program on the bundled libraries. The re-exec that sets OpenBLAS's settings
    # (OpenBLASTuning) would restart the loader without its arguments, so the wrapper turns it off.
    cat > "$stage/bin/$product" <<WRAPPER
#!/bin/sh
here=\$(cd "\$(dirname "\$0")/.." && pwd)
export HISTODIFF_NO_REEXEC=1
exec "\$here/lib/ld-linux-x86-64.so.2" --library-path "\$here/lib" "\$here/libexec/$product" "\$@"
WRAPPER
    chmod 755 "$stage/bin/$product"
    # Every library the dynamic loader resolves (ldd lists the whole closure), copied under its soname.
    ldd "$stage/libexec/$product" | awk '/=> \//{print $1, $3} /ld-linux-x86-64/ && !/=>/{print "ld-linux-x86-64.so.2", $1}' |
        while read -r soname path; do
            [ -e "$stage/lib/$soname" ] || cp -L "$path" "$stage/lib/$soname"
        done
done
# glibc's other libraries, which a driver loaded at run time (an OpenCL ICD) may link: from the bundled glibc, not
# from the host's, whose version may differ.
for library in libdl.so.2 libpthread.so.0 librt.so.1 libm.so.6; do
    [ -e "$stage/lib/$library" ] || cp -L "/lib/x86_64-linux-gnu/$library" "$stage/lib/$library"
done
missing=$(ldd "$stage/libexec/histodiff" "$stage/libexec/bench" | grep "not found" || true)
[ -z "$missing" ] || { echo "gpu-bundle: unresolved libraries: $missing" >&2; exit 1; }
cp benchmarks/torch_peer.py "$stage/python/benchmarks/"
cp tools/unet_reference.py tools/ssl_step_reference.py tools/ssl_cps_family_reference.py "$stage/python/tools/"
cp tools/fixtures/*.py "$stage/python/tools/fixtures/"
git rev-parse --short HEAD > "$stage/COMMIT" 2>/dev/null || echo unknown > "$stage/COMMIT"
rm -rf "$out"
mkdir -p "$out"
install -m 755 tools/gpu-check.sh "$out/run.sh"
XZ_OPT=-6T2 tar -cJf "$out/payload.tar.xz" -C "$stage" .
echo "gpu-bundle: $out ($(du -sh "$out" | cut -f1); unpacked $(du -sh "$stage" | cut -f1)); on the GPU machine: $out/run.sh RESULTS"
