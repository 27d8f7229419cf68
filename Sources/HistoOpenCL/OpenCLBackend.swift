import CCLBlast
import COpenCL
import Foundation
import HistoCore

/// Device memory of the OpenCL backend; returns to the backend's pool when released.
public final class CLBuffer: BackendBuffer {
    public let mem: cl_mem
    public let elementCount: Int
    /// Strong: the backend (context, pool) must outlive every buffer made from it.
    let owner: OpenCLBackend
    public var backend: any Backend { owner }

    init(mem: cl_mem, elementCount: Int, owner: OpenCLBackend) { self.mem = mem; self.elementCount = elementCount; self.owner = owner }
    deinit { owner.giveBack(mem, count: elementCount) }
}

/// The OpenCL backend: one device, one context, one in-order queue. Ops run as the kernels their
/// `DeviceOperation.launches` name; programs build once per kernel file and device (disk cache).
public final class OpenCLBackend: Backend {
    public let device: OpenCLDevice
    public var name: String { "opencl" }
    let context: cl_context
    var queue: cl_command_queue?
    private let library = KernelLibrary()
    private let cache = ProgramCache()
    private var programs: [String: cl_program] = [:]
    private var kernels: [String: cl_kernel] = [:]
    private var free: [Int: [cl_mem]] = [:]
    private let lock = NSLock()
    /// Buffers that had to be created (not reused from the pool).
    public private(set) var freshAllocations = 0
    /// The last kernel or SGEMM enqueued since the queue was last waited on. Commands fail asynchronously (device
    /// lost, out of resources mid-kernel): such a failure surfaces at the next read, flush or wait, whose error
    /// names this command as the likely culprit.
    private var lastEnqueued: String?

    /// The backend for the chosen device (`HISTODIFF_OPENCL_DEVICE`, else a GPU, else any), or nil when this machine
    /// has no OpenCL platform or device.
    public static func make(deviceIndex: Int? = nil) throws -> OpenCLBackend? {
        guard let device = OpenCLDevice.choose(index: deviceIndex) else { return nil }
        return try OpenCLBackend(device: device)
    }

    /// `tunesCLBlast`: apply the shipped CLBlast parameters for this kind of device (`CLBlastTuning.shipped`), unless
    /// `HISTODIFF_CLBLAST_DEFAULTS=1` asks for CLBlast's own.
    public init(device: OpenCLDevice, tunesCLBlast: Bool = true) throws {
        self.device = device
        var status: cl_int = 0
        var id: cl_device_id? = device.id
        guard let context = clCreateContext(nil, 1, &id, nil, nil, &status), status == CL_SUCCESS else {
            throw EngineError.backend(name: "opencl (\(device.name))", message: "creating a context: \(clErrorName(status))")
        }
        self.context = context
        let q = clCreateCommandQueue(context, device.id, cl_command_queue_properties(CL_QUEUE_PROFILING_ENABLE), &status)
        try check(status, "creating a command queue", device: device.name)
        queue = q
        if tunesCLBlast, ProcessInfo.processInfo.environment["HISTODIFF_CLBLAST_DEFAULTS"] != "1",
           let tuning = CLBlastTuning.entry(for: .init(device)) {
            try tuning.apply(to: device)
        }
    }

    deinit {
        for (_, k) in kernels { clReleaseKernel(k) }
        for (_, p) in programs { clReleaseProgram(p) }
        for (_, mems) in free { for m in mems { clReleaseMemObject(m) } }
        if let queue { clReleaseCommandQueue(queue) }
        clReleaseContext(context)
    }

    public func supports(_ op: any HistoCore.Operation) -> Bool { op is any DeviceOperation }

    // MARK: memory

    public func allocate(elementCount: Int) throws -> any BackendBuffer {
        let n = max(elementCount, 1)
        lock.lock()
        let reused = free[n]?.popLast()
        lock.unlock()
        if let reused { return CLBuffer(mem: reused, elementCount: n, owner: self) }
        var status: cl_int = 0
        let mem = clCreateBuffer(context, cl_mem_flags(CL_MEM_READ_WRITE), n * 4, nil, &status)
        try check(status, "allocating \(n * 4) bytes", device: device.name)
        freshAllocations += 1
        return CLBuffer(mem: mem!, elementCount: n, owner: self)
    }

    func giveBack(_ mem: cl_mem, count: Int) {
        lock.lock(); free[count, default: []].append(mem); lock.unlock()
    }

    public func read(_ buffer: any BackendBuffer, offset: Int, count: Int, into destination: UnsafeMutablePointer<Float>) throws {
        guard count > 0 else { return }
        let b = buffer as! CLBuffer
        try checkQueue(clEnqueueReadBuffer(queue, b.mem, cl_bool(CL_TRUE), offset * 4, count * 4, destination, 0, nil, nil),
                       "reading \(count) floats")
    }

    public func upload(_ source: UnsafePointer<Float>, count: Int) throws -> any BackendBuffer {
        let buffer = try allocate(elementCount: count) as! CLBuffer
        if count > 0 {
            try checkQueue(clEnqueueWriteBuffer(queue, buffer.mem, cl_bool(CL_TRUE), 0, count * 4, source, 0, nil, nil),
                           "writing \(count) floats")
        }
        return buffer
    }

    /// Enqueues a device-side copy of `count` floats (clEnqueueCopyBuffer): the device's copy bandwidth, which
    /// `bench` measures as the reference for memory-bound kernels.
    public func enqueueCopy(from source: any BackendBuffer, to destination: any BackendBuffer, count: Int) throws {
        let s = source as! CLBuffer, d = destination as! CLBuffer
        try check(clEnqueueCopyBuffer(queue, s.mem, d.mem, 0, 0, count * 4, 0, nil, nil),
                  "copying \(count) floats between buffers", device: device.name)
        lastEnqueued = "buffer copy of \(count) floats"
    }

    // MARK: execution

    public func execute(_ split: GraphSplit) throws {
        for step in split.steps {
            let node = step.node
            let shapes = node.inputs.map(\.shape)
            if let offset = node.op.viewOffset(shapes) {
                realizeView(node, offset: offset)
            } else if let op = node.op as? any DeviceOperation {
                try node.allocateOutput(on: self)
                var scratch: [Int: CLBuffer] = [:]
                for launch in op.launches(inputShapes: shapes, outputShape: node.shape) {
                    try run(launch, node: node, scratch: &scratch)
                }
            } else {
                throw EngineError.backend(name: "opencl (\(device.name))", message: "\(node.op.name) has no kernel")
            }
            for dead in step.release { dead.release() }
        }
        try check(clFlush(queue), "flushing the queue" + lastEnqueuedNote, device: device.name)
    }

    /// Waits until every enqueued command has finished (for timing).
    public func synchronize() throws { try checkQueue(clFinish(queue), "waiting for the queue") }

    /// Checks a blocking queue operation: afterwards every earlier command has finished, so a failure names the last
    /// one enqueued.
    private func checkQueue(_ code: cl_int, _ what: String) throws {
        try check(code, what + lastEnqueuedNote, device: device.name)
        lastEnqueued = nil
    }

    private var lastEnqueuedNote: String { lastEnqueued.map { " (after \($0), the last command enqueued)" } ?? "" }

    private func resolve(_ argument: KernelArgument, node: Node, scratch: inout [Int: CLBuffer]) throws -> (cl_mem, Int)? {
        switch argument {
        case .input(let i): return ((node.inputs[i].buffer as! CLBuffer).mem, node.inputs[i].offset)
        case .output: return ((node.buffer as! CLBuffer).mem, node.offset)
        case .outputPart(let start): return ((node.buffer as! CLBuffer).mem, node.offset + start)
        case .scratch(let index, let count):
            if scratch[index] == nil { scratch[index] = try allocate(elementCount: count) as? CLBuffer }
            return (scratch[index]!.mem, 0)
        default: return nil
        }
    }

    private func run(_ launch: KernelLaunch, node: Node, scratch: inout [Int: CLBuffer]) throws {
        switch launch {
        case let .kernel(file, name, args, global, local):
            if global.contains(0) { return }
            let kernel = try self.kernel(file: file, name: name)
            var index: cl_uint = 0
            func setBytes(_ raw: UnsafeRawBufferPointer) throws {
                try check(clSetKernelArg(kernel, index, raw.count, raw.baseAddress), "argument \(index) of \(name) (\(file).cl)", device: device.name)
                index += 1
            }
            func set<T: BitwiseCopyable>(_ value: T) throws { try withUnsafeBytes(of: value) { try setBytes($0) } }
            for argument in args {
                switch argument {
                case .int(let v): try set(v)
                case .float(let v): try set(v)
                case .ulong(let v): try set(v)
                case .ints(let values): try values.withUnsafeBytes { try setBytes($0) }
                default:
                    let (mem, offset) = try resolve(argument, node: node, scratch: &scratch)!
                    try set(mem)
                    try set(Int32(offset))
                }
            }
            var g = global
            var l = local ?? []
            if let local {
                let total = local.reduce(1, *)
                guard total <= device.maxWorkGroupSize else {
                    throw EngineError.backend(name: "opencl (\(device.name))",
                                              message: "\(name): work-group \(local) exceeds the device maximum \(device.maxWorkGroupSize)")
                }
                // Round the global range up to whole work-groups; kernels guard their bounds.
                for i in g.indices { g[i] = (g[i] + local[i] - 1) / local[i] * local[i] }
            }
            let status = l.isEmpty
                ? clEnqueueNDRangeKernel(queue, kernel, cl_uint(g.count), nil, &g, nil, 0, nil, nil)
                : clEnqueueNDRangeKernel(queue, kernel, cl_uint(g.count), nil, &g, &l, 0, nil, nil)
            try check(status, "launching \(name) (\(file).cl) over \(global)", device: device.name)
            lastEnqueued = "kernel \(name) (Kernels/\(file).cl)"
        case let .gemm(p):
            let a = try resolve(p.a, node: node, scratch: &scratch)!, b = try resolve(p.b, node: node, scratch: &scratch)!
            let c = try resolve(p.c, node: node, scratch: &scratch)!
            var q: cl_command_queue? = queue
            let ta = p.transposeA ? CLBlastTransposeYes : CLBlastTransposeNo
            let tb = p.transposeB ? CLBlastTransposeYes : CLBlastTransposeNo
            let status: CLBlastStatusCode
            if p.batches == 1 {
                status = CLBlastSgemm(CLBlastLayoutRowMajor, ta, tb, p.m, p.n, p.k, p.alpha,
                                      a.0, a.1 + p.aOffset, p.lda, b.0, b.1 + p.bOffset, p.ldb, p.beta,
                                      c.0, c.1 + p.cOffset, p.ldc, &q, nil)
            } else {
                status = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, ta, tb, p.m, p.n, p.k, p.alpha,
                                                    a.0, a.1 + p.aOffset, p.lda, p.aBatchStride,
                                                    b.0, b.1 + p.bOffset, p.ldb, p.bBatchStride, p.beta,
                                                    c.0, c.1 + p.cOffset, p.ldc, p.cBatchStride, p.batches, &q, nil)
            }
            guard status == CLBlastSuccess else {
                throw EngineError.backend(name: "opencl (\(device.name))",
                                          message: "CLBlast SGEMM \(p.m)×\(p.n)×\(p.k) (batch \(p.batches)) failed: \(clBlastStatusName(status.rawValue))")
            }
            lastEnqueued = "CLBlast SGEMM \(p.m)×\(p.n)×\(p.k) (batch \(p.batches))"
        }
    }

    /// The kernel `name` of `Kernels/<file>.cl`, building the program on first use.
    func kernel(file: String, name: String) throws -> cl_kernel {
        let key = file + "/" + name
        if let k = kernels[key] { return k }
        let program = try self.program(file: file)
        var status: cl_int = 0
        let k = clCreateKernel(program, name, &status)
        try check(status, "kernel \(name) in Kernels/\(file).cl", device: device.name)
        kernels[key] = k!
        return k!
    }

    /// The built program of `Kernels/<file>.cl` (throws with the build log when it does not compile).
    public func program(file: String) throws -> cl_program {
        if let p = programs[file] { return p }
        let source = try library.source(family: file)
        let options = buildOptions
        let p = try cache.program(file: file, source: source, options: options, context: context, device: device)
        programs[file] = p
        return p
    }

    /// Options that suit the device: its OpenCL C standard, and `-D CPU_DEVICE` on CPU devices, whose work-item
    /// loops stream contiguous runs better than GPU-style interleaved accesses (norm.cl). Bit-for-bit agreement
    /// with the CPU is handled in the kernels (`#pragma OPENCL FP_CONTRACT OFF`).
    var buildOptions: String { device.standardOption + (device.isCPU ? " -D CPU_DEVICE" : "") }
}
