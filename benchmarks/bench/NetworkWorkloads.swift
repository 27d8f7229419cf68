import HistoCore

extension Workloads {
    /// The reference workloads for convolution, group norm and attention, forward and forward+backward.
    static func extraWorkloads(quick: Bool) -> [Workload] {
        let n = quick ? 1 : 8, size = quick ? 16 : 64
        let x = leaf([n, 64, size, size], seed: 3), w = leaf([64, 64, 3, 3], seed: 4), b = leaf([64], seed: 5)
        let convFlops = 2 * Double(n * 64 * size * size) * 64 * 9
        let gx = leaf([n, 128, size, size], seed: 6), gw = leaf([128], seed: 7), gb = leaf([128], seed: 8)
        let gnBytes = Double(gx.count) * 4 * 2 // read x, write y
        let tokens = quick ? 64 : 1024
        let q = leaf([n, 4, tokens, 32], seed: 9), k = leaf([n, 4, tokens, 32], seed: 10), v = leaf([n, 4, tokens, 32], seed: 11)
        let attentionFlops = 4 * Double(n * 4) * Double(tokens) * Double(tokens) * 32
        let conv: ([Tensor]) -> Tensor = { $0[0].conv2d($0[1], bias: $0[2], stride: 1, padding: 1) }
        let groupNorm: ([Tensor]) -> Tensor = { $0[0].groupNorm(groups: 32, weight: $0[1], bias: $0[2]) }
        // The ResBlocks' GroupNorm → SiLU as the fused op and as two ops, for comparison.
        let groupNormSiLU: ([Tensor]) -> Tensor = { $0[0].groupNorm(groups: 32, weight: $0[1], bias: $0[2], activation: .silu) }
        let groupNormThenSiLU: ([Tensor]) -> Tensor = { groupNorm($0).silu() }
        let attention: ([Tensor]) -> Tensor = { Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2]) }
        // The same attention composed from matmul + softmax + matmul (an N×N matrix in memory), for comparison.
        let unfused: ([Tensor]) -> Tensor = { ($0[0].matmul($0[1], transposeB: true) * (1 / Float(32).squareRoot())).softmax(axis: -1).matmul($0[2]) }
        let shape = "\(n)x64x\(size)x\(size)"
        return [
            .forward("conv2d 3x3 \(shape) fwd", flops: convFlops, inputs: [x, w, b], conv),
            .training("conv2d 3x3 \(shape) fwd+bwd", flops: 3 * convFlops, inputs: [x, w, b], conv),
            // The device's copy of the group norms' tensor: their "% of copy" reference.
            .deviceCopy("copy (device) \(n)x128x\(size)x\(size)", count: gx.count),
            .forward("group_norm 32g \(n)x128x\(size)x\(size) fwd", bytes: gnBytes, inputs: [gx, gw, gb], groupNorm),
            .training("group_norm 32g \(n)x128x\(size)x\(size) fwd+bwd", bytes: 2.5 * gnBytes, inputs: [gx, gw, gb], groupNorm),
            // One read and one write of the same tensor through the elementwise kernel, next to the group norms.
            .forward("copy (neg) \(n)x128x\(size)x\(size)", bytes: gnBytes, inputs: [gx]) { -$0[0] },
            .forward("group_norm+silu 32g \(n)x128x\(size)x\(size) fwd", bytes: gnBytes, inputs: [gx, gw, gb], groupNormSiLU),
            .training("group_norm+silu 32g \(n)x128x\(size)x\(size) fwd+bwd", bytes: 2.5 * gnBytes, inputs: [gx, gw, gb], groupNormSiLU),
            .forward("group_norm then silu 32g \(n)x128x\(size)x\(size) fwd", bytes: gnBytes, inputs: [gx, gw, gb], groupNormThenSiLU),
            .training("group_norm then silu 32g \(n)x128x\(size)x\(size) fwd+bwd", bytes: 2.5 * gnBytes, inputs: [gx, gw, gb],
                      groupNormThenSiLU),
            .forward("attention \(n)x4x\(tokens)x32 fwd", flops: attentionFlops, inputs: [q, k, v], attention),
            .training("attention \(n)x4x\(tokens)x32 fwd+bwd", flops: 2.5 * attentionFlops, inputs: [q, k, v], attention),
            .forward("attention unfused \(n)x4x\(tokens)x32 fwd", flops: attentionFlops, inputs: [q, k, v], unfused),
            .training("attention unfused \(n)x4x\(tokens)x32 fwd+bwd", flops: 2.5 * attentionFlops, inputs: [q, k, v], unfused),
        ]
    }
}
