import Foundation
import HistoCore

extension Dataset {
    /// This dataset with the images of each folder in `folders` (`images/` or PNG files at its top level; masks
    /// there are not read) added as unlabelled items, named `<folder name>/<image name>` so that they never collide
    /// with this dataset's names.
    public func addingUnlabelled(_ folders: [String]) throws -> Dataset {
        var items = self.items
        var names = Set(items.map(\.name))
        for folder in folders {
            let extra = try Dataset.open(path: folder, ignoringMasks: true)
            let prefix = URL(fileURLWithPath: extra.root).lastPathComponent
            for item in extra.items {
                let name = prefix + "/" + item.name
                guard names.insert(name).inserted else {
                    throw EngineError.file(path: folder, message: "image \(item.name) would be named \(name), which "
                                           + "another unlabelled folder already uses; rename one folder")
                }
                items.append(Item(name: name, imagePath: item.imagePath, maskPath: nil, instancePath: nil,
                                  width: item.width, height: item.height))
            }
        }
        return Dataset(root: root, classes: classes, items: items)
    }
}
