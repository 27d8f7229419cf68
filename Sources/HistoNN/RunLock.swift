import Foundation
import HistoCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One run per folder: a lock file `<directory>/.lock` that a training command takes before it writes anything,
/// so that a second run on the same folder stops with a message naming the first instead of mixing checkpoints and
/// logs with it.
///
/// The file holds the holder's PID, host name and start time as JSON. It is created with `O_CREAT | O_EXCL`, so of
/// two processes only one creates it. A lock whose holder is a process of this host that no longer exists (killed,
/// crashed: `kill(pid, 0)` fails with `ESRCH`) is stale: it is taken over, and `takenOver` says whose it was. A lock
/// of another host is never taken over (whether its process lives cannot be checked from here). `release()`, or the
/// lock's deinit, removes the file.
public final class RunLock {
    /// The lock file's name inside the run folder.
    public static let fileName = ".lock"

    /// What the lock file records about its holder.
    struct Holder: Codable, Equatable {
        var pid: Int32
        var host: String
        /// When the holder took the lock (ISO 8601).
        var started: String
    }

    /// The run folder.
    public let directory: String
    /// `<directory>/.lock`.
    public let path: String
    /// A notice for the user when a stale lock was taken over ("…/.lock: taken over from process 123 on host …,
    /// which no longer runs"); nil when the folder was free.
    public let takenOver: String?
    private var held = true

    private init(directory: String, path: String, takenOver: String?) {
        self.directory = directory
        self.path = path
        self.takenOver = takenOver
    }

    /// Takes the lock of `directory`, creating the folder if needed. Throws `EngineError.file(path: directory, …)`
    /// when another live process holds it (naming its PID, host and start), when the lock file is unreadable, or
    /// when the folder or the file cannot be created.
    public static func acquire(directory: String) throws -> RunLock {
        try FileSystem.createFolder(directory, purpose: "run")
        let path = URL(fileURLWithPath: directory).appendingPathComponent(fileName).path
        let me = Holder(pid: getpid(), host: hostName(), started: ISO8601DateFormatter().string(from: Date()))
        // Two rounds: the second follows the removal of a stale lock.
        var takenOver: String?
        for _ in 0..<2 {
            if try create(path, holder: me) { return RunLock(directory: directory, path: path, takenOver: takenOver) }
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            guard let holder = try? decodeJSON(Holder.self, text) else {
                if !FileManager.default.fileExists(atPath: path) { continue }  // released meanwhile
                throw EngineError.file(path: directory, message:
                    "has a lock file \(path) that names no process (written by a run that crashed while starting?); "
                    + "remove it if no run uses this folder")
            }
            guard holder.host == me.host, !isAlive(holder.pid) else {
                let elsewhere = holder.host == me.host ? "" : " (another host: whether it still runs cannot be "
                    + "checked from here; remove \(path) if it does not)"
                throw EngineError.file(path: directory, message: "is in use by the run of process \(holder.pid) on "
                    + "\(holder.host) (started \(holder.started))\(elsewhere); wait for it or choose another folder")
            }
            // Removes the stale file only while it still holds the dead holder (not a lock taken meanwhile).
            guard (try? String(contentsOfFile: path, encoding: .utf8)) == text else { continue }
            guard unlink(path) == 0 || errno == ENOENT else {
                throw EngineError.file(path: path, message: "cannot remove the stale lock of process \(holder.pid): "
                                       + String(cString: strerror(errno)))
            }
            takenOver = "\(path): taken over from process \(holder.pid) on \(holder.host) (started \(holder.started)), "
                + "which no longer runs"
        }
        throw EngineError.file(path: directory, message: "another run took its lock \(path) while this one started; "
                               + "wait for it or choose another folder")
    }

    /// Removes the lock file (once; later calls do nothing).
    public func release() {
        guard held else { return }
        held = false
        unlink(path)
    }

    deinit { release() }

    /// Creates the lock file holding `holder`; false when it exists already.
    private static func create(_ path: String, holder: Holder) throws -> Bool {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard descriptor >= 0 else {
            if errno == EEXIST { return false }
            throw EngineError.file(path: path, message:
                "cannot create the run's lock file: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        // One write: a reader sees an empty file for at most the moment between open and write.
        let bytes = Array(try encodeJSON(holder).utf8) + [10]
        guard bytes.withUnsafeBytes({ write(descriptor, $0.baseAddress, $0.count) }) == bytes.count else {
            let reason = String(cString: strerror(errno))
            unlink(path)
            throw EngineError.file(path: path, message: "cannot write the run's lock file: \(reason)")
        }
        return true
    }

    /// Whether process `pid` of this host exists (EPERM: it does, owned by another user).
    static func isAlive(_ pid: Int32) -> Bool { pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH) }

    /// This host's name as lock files record it (`gethostname`).
    public static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "unknown host" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
