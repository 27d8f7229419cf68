import HistoCore

/// Marker-controlled watershed as `skimage.segmentation.watershed(elevation, markers, mask=mask)` computes it
/// (connectivity 1, no compactness, no watershed line): a priority flood from the markers over the 4-neighbours
/// inside `mask`, lowest elevation first. A pixel takes its label when it is first reached, and its priority is
/// its elevation raised to the priority of the pixel it was reached from; markers enter at their own elevation
/// (scikit-image 0.26; its later versions enter them at −∞, which changes how plateaus split). Ties go to the
/// earlier push (scikit-image's `age`), markers first; the heap is scikit-image's binary heap on (priority, age)
/// and neighbours are visited up, left, right, down as its raveled offsets are, so plateaus split as theirs do.
/// Markers outside `mask` are dropped; mask pixels that no marker reaches stay 0. O(pixels · log pixels).
public func watershed(elevation: [Float], markers: [Int32], mask: [Bool], width: Int, height: Int) throws -> [Int32] {
    let count = width * height
    guard width > 0, height > 0, elevation.count == count, markers.count == count, mask.count == count else {
        throw EngineError.invalidValue(op: "watershed", message: "elevation (\(elevation.count)), markers "
                                       + "(\(markers.count)) and mask (\(mask.count)) must each fill "
                                       + "\(width)×\(height)")
    }
    var output = [Int32](repeating: 0, count: count)
    var heap = FloodHeap()
    for i in 0..<count where markers[i] != 0 && mask[i] {
        output[i] = markers[i]
        heap.push(.init(priority: elevation[i], age: 0, index: i))
    }
    var age = 1
    while let item = heap.pop() {
        let (y, x) = (item.index / width, item.index % width)
        for (inside, j) in [(y > 0, item.index - width), (x > 0, item.index - 1), (x + 1 < width, item.index + 1),
                            (y + 1 < height, item.index + width)] where inside && mask[j] && output[j] == 0 {
            age += 1
            output[j] = output[item.index]
            heap.push(.init(priority: max(elevation[j], item.priority), age: age, index: j))
        }
    }
    return output
}

/// A binary min-heap on (priority, age), sifting as scikit-image's `heap_general.pxi` does.
private struct FloodHeap {
    struct Item {
        let priority: Float
        let age: Int
        let index: Int

        func precedes(_ other: Item) -> Bool {
            priority != other.priority ? priority < other.priority : age < other.age
        }
    }

    private var items: [Item] = []

    mutating func push(_ item: Item) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child + 1) / 2 - 1
            guard items[child].precedes(items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Item? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        guard !items.isEmpty else { return first }
        items[0] = last
        var i = 0
        while true {
            let (left, right) = (2 * i + 1, 2 * i + 2)
            guard left < items.count else { break }
            var smallest = i
            if items[left].precedes(items[i]) { smallest = left }
            if right < items.count && items[right].precedes(items[smallest]) { smallest = right }
            guard smallest != i else { break }
            items.swapAt(i, smallest)
            i = smallest
        }
        return first
    }
}
