import Foundation
import XCTest
import HistoCore
@testable import HistoNN

/// One run per folder: the lock file, its holder in the refusal, stale locks of dead processes, other hosts.
final class RunLockTests: XCTestCase {
    /// Writes a lock file by hand, as another process would have.
    func writeLock(in directory: String, pid: Int32, host: String = RunLock.hostName()) throws {
        let holder = RunLock.Holder(pid: pid, host: host, started: "2025-01-01T00:00:00Z")
        try encodeJSON(holder).write(toFile: directory + "/" + RunLock.fileName, atomically: true, encoding: .utf8)
    }

    /// Starts `/bin/sh -c SCRIPT`.
    func spawn(_ script: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        try process.run()
        return process
    }

    func testASecondAcquireWhileHeldNamesTheHolderAndReleaseFreesTheFolder() throws {
        let directory = try temporaryDirectory() + "/run"
        let lock = try RunLock.acquire(directory: directory)
        XCTAssertNil(lock.takenOver)
        let text = try String(contentsOfFile: lock.path, encoding: .utf8)
        XCTAssertEqual(try decodeJSON(RunLock.Holder.self, text).pid, getpid())
        assertFileError(directory, contains: ["is in use by the run of process \(getpid()) on \(RunLock.hostName())",
                                              "(started ", "wait for it or choose another folder"]) {
            _ = try RunLock.acquire(directory: directory)
        }
        lock.release()
        XCTAssertFalse(FileManager.default.fileExists(atPath: lock.path))
        do {
            let again = try RunLock.acquire(directory: directory)
            XCTAssertNil(again.takenOver)
        }
        // The deinit released it.
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/" + RunLock.fileName))
    }

    /// A lock whose process lives (another process, here `sleep`) is respected; once that process is gone the lock
    /// is stale and taken over with a notice.
    func testTheLockOfAnotherLiveProcessIsRespectedAndTakenOverOnceItDies() throws {
        let directory = try temporaryDirectory()
        let sleeper = try spawn("exec sleep 30")
        defer { if sleeper.isRunning { sleeper.terminate() } }
        try writeLock(in: directory, pid: sleeper.processIdentifier)
        assertFileError(directory, contains: ["is in use by the run of process \(sleeper.processIdentifier)"]) {
            _ = try RunLock.acquire(directory: directory)
        }
        sleeper.terminate()
        sleeper.waitUntilExit()
        let lock = try RunLock.acquire(directory: directory)
        XCTAssertEqual(lock.takenOver, "\(directory)/.lock: taken over from process \(sleeper.processIdentifier) on "
                       + "\(RunLock.hostName()) (started 2025-01-01T00:00:00Z), which no longer runs")
        let holder = try decodeJSON(RunLock.Holder.self, String(contentsOfFile: lock.path, encoding: .utf8))
        XCTAssertEqual(holder.pid, getpid())
    }

    func testLocksOfOtherHostsAreNeverTakenOverAndUnreadableLocksAreErrors() throws {
        let directory = try temporaryDirectory()
        let finished = try spawn("exit 0")
        finished.waitUntilExit()
        try writeLock(in: directory, pid: finished.processIdentifier, host: "elsewhere.example")
        assertFileError(directory, contains: ["process \(finished.processIdentifier) on elsewhere.example",
                                              "another host", "remove \(directory)/.lock if it does not"]) {
            _ = try RunLock.acquire(directory: directory)
        }
        try "".write(toFile: directory + "/.lock", atomically: true, encoding: .utf8)
        assertFileError(directory, contains: ["names no process", "remove it if no run uses this folder"]) {
            _ = try RunLock.acquire(directory: directory)
        }
        let file = directory + "/file"
        try "x".write(toFile: file, atomically: true, encoding: .utf8)
        assertFileError(file, contains: ["is a file, not a folder"]) { _ = try RunLock.acquire(directory: file) }
    }
}
