import Foundation

/// File-system errors as one line that names the path and the reason, instead of Foundation's multi-field dumps
/// (`Error Domain=NSCocoaErrorDomain Code=4 … UserInfo={…}`), and folder creation with such errors.
public enum FileSystem {
    /// `"PATH: REASON"` for a Foundation file error (Cocoa or POSIX domain), nil for any other error.
    public static func describe(_ error: Error) -> String? {
        let error = error as NSError
        guard error.domain == NSCocoaErrorDomain || error.domain == NSPOSIXErrorDomain else { return nil }
        let path = error.userInfo[NSFilePathErrorKey] as? String ?? (error.userInfo[NSURLErrorKey] as? URL)?.path
        return (path.map { "\($0): " } ?? "") + reason(of: error)
    }

    /// Why a file operation failed, on one line: the POSIX reason when the error carries one ("No such file or
    /// directory", "Permission denied"), else its localized description.
    public static func reason(of error: Error) -> String {
        if let code = posixCode(error) ?? posixCode((error as NSError).userInfo[NSUnderlyingErrorKey]) {
            return String(cString: strerror(code))
        }
        return error.localizedDescription.split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    /// The errno of a POSIX error (a `POSIXError`, or an `NSError` of its domain).
    private static func posixCode(_ error: Any?) -> Int32? {
        if let error = error as? POSIXError { return error.code.rawValue }
        guard let error = error as? Error else { return nil }
        let bridged = error as NSError
        return bridged.domain == NSPOSIXErrorDomain ? Int32(bridged.code) : nil
    }

    /// Creates the folder `path` and its parents unless it exists. Throws `EngineError.file` naming `path` when it
    /// is a file, or with the reason it cannot be created; `purpose` (e.g. "run", "output") names the folder's role.
    public static func createFolder(_ path: String, purpose: String) throws {
        var isFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) {
            guard isFolder.boolValue else {
                throw EngineError.file(path: path, message: "is a file, not a folder; choose another \(purpose) folder")
            }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw EngineError.file(path: path, message: "cannot create the \(purpose) folder: \(reason(of: error))")
        }
    }
}
