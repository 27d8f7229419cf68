import CBLAS
import Dispatch
import Glibc
import HistoCore
import HistoOpenCL

/// Median and fastest wall time per run, and the process's CPU time per run over the timed runs (all threads: user
/// and system, from getrusage), since system time is where waiting threads and page faults show.
struct Timing { var median: Double; var min: Double; var runs: Int; var user: Double; var system: Double }

/// Runs `body` once to warm up, then until `minSeconds` have passed (at least 3 runs unless maxRuns is smaller).
func time(minSeconds: Double, maxRuns: Int, _ body: () throws -> Void) rethrows -> Timing {
    try body()
    var samples: [Double] = []
    let (user0, system0) = processCPUSeconds()
    let start = DispatchTime.now().uptimeNanoseconds
    repeat {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try body()
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    } while samples.count < maxRuns && (samples.count < 3 || Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < minSeconds)
    let (user1, system1) = processCPUSeconds(), runs = Double(samples.count)
    samples.sort()
    return Timing(median: samples[samples.count / 2], min: samples[0], runs: samples.count,
                  user: (user1 - user0) / runs, system: (system1 - system0) / runs)
}

/// User and system CPU seconds of this process so far.
func processCPUSeconds() -> (user: Double, system: Double) {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// A peer implementation timed in the same run (e.g. OpenBLAS's SGEMM called directly).
struct Peer {
    let name: String
    let run: () -> Void
    func measure(minSeconds: Double, maxRuns: Int) throws -> Timing { time(minSeconds: minSeconds, maxRuns: maxRuns, run) }
}

/// Something to time: `run` does one repetition on a backend and returns when the backend is done. Most workloads
/// are a graph (see `init(name:flops:bytes:peer:build:)`); training steps run a whole step.
struct Workload {
    let name: String
    let flops: Double
    let bytes: Double
    let peer: Peer?
    /// The device's copy bandwidth: later memory-bound workloads print their GB/s as a percentage of this one's.
    var isCopyReference = false
    let run: (any Backend) throws -> Void

    func measure(on backend: any Backend, minSeconds: Double, maxRuns: Int) throws -> Timing {
        try time(minSeconds: minSeconds, maxRuns: maxRuns) { try run(backend) }
    }
}

extension Workload {
    /// A graph to time: `build` records it from fixed leaves (anew for every run); forward+backward workloads add
    /// the gradients.
    init(name: String, flops: Double, bytes: Double, peer: Peer?, build: @escaping () -> [Tensor]) {
        self.init(name: name, flops: flops, bytes: bytes, peer: peer, run: { backend in
            try eval(build(), on: backend)
            try backend.synchronize()
        })
    }

    /// A device-side copy of `count` floats between two buffers (clEnqueueCopyBuffer on OpenCL, memcpy on the
    /// CPU): one read and one write, outside the graph, as the bandwidth reference.
    static func deviceCopy(_ name: String, count: Int) -> Workload {
        var buffers: (source: any BackendBuffer, destination: any BackendBuffer)?
        let host = (UnsafeMutablePointer<Float>.allocate(capacity: count), UnsafeMutablePointer<Float>.allocate(capacity: count))
        host.0.initialize(repeating: 1, count: count)
        return Workload(name: name, flops: 0, bytes: Double(count) * 8, peer: nil, isCopyReference: true) { backend in
            guard let cl = backend as? OpenCLBackend else { host.1.update(from: host.0, count: count); return }
            if buffers == nil || buffers!.source.backend !== backend {
                buffers = (try cl.allocate(elementCount: count), try cl.allocate(elementCount: count))
            }
            try cl.enqueueCopy(from: buffers!.source, to: buffers!.destination, count: count)
            try cl.synchronize()
        }
    }

    /// Forward only.
    static func forward(_ name: String, flops: Double = 0, bytes: Double = 0, peer: Peer? = nil,
                        inputs: [Tensor], _ f: @escaping ([Tensor]) -> Tensor) -> Workload {
        Workload(name: name, flops: flops, bytes: bytes, peer: peer, build: { [f(inputs)] })
    }

    /// Forward and backward to every input, with a fixed random cotangent.
    static func training(_ name: String, flops: Double = 0, bytes: Double = 0, inputs: [Tensor],
                         _ f: @escaping ([Tensor]) -> Tensor) -> Workload {
        let probe = f(inputs)
        let seed = try! RandomGenerator(seed: 99).uniform(probe.shape, -1, 1).materialized()
        return Workload(name: name, flops: flops, bytes: bytes, peer: nil, build: {
            let out = f(inputs)
            return [out] + Autodiff.gradients(of: out, wrt: inputs, seed: seed)
        })
    }
}

enum Workloads {
    static func leaf(_ shape: [Int], seed: UInt64) -> Tensor {
        try! RandomGenerator(seed: seed).normal(shape).materialized()
    }

    static func all(quick: Bool) -> [Workload] {
        let n = quick ? 128 : 1024
        let a = leaf([n, n], seed: 1), b = leaf([n, n], seed: 2)
        let pa = try! a.toArray(), pb = try! b.toArray()
        var pc = [Float](repeating: 0, count: n * n)
        let openblas = Peer(name: "OpenBLAS sgemm") {
            // OpenBLAS on all the cores, with its own threads (HistoCore keeps it single-threaded, `CPUThreads`).
            openblas_set_num_threads(Int32(CPUThreads.count))
            defer { openblas_set_num_threads(1) }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1,
                        pa, Int32(n), pb, Int32(n), 0, &pc, Int32(n))
        }
        var list: [Workload] = [
            .forward("sgemm \(n)³", flops: 2 * pow3(n), peer: openblas, inputs: [a, b]) { $0[0].matmul($0[1]) },
        ]
        list += extraWorkloads(quick: quick)
        list += diffusionWorkloads(quick: quick)
        list += methodWorkloads(quick: quick)
        return list
    }

    static func pow3(_ n: Int) -> Double { Double(n) * Double(n) * Double(n) }
}
