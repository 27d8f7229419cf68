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
        heap.push(priority: elevation[i], age: 0, index: i)
    }
    var age: UInt32 = 1
    while let (priority, index) = heap.pop() {
        let (y, x) = (index / width, index % width)
        func reach(_ j: Int) {
            guard mask[j] && output[j] == 0 else { return }
            age += 1
            output[j] = output[index]
            heap.push(priority: max(elevation[j], priority), age: age, index: j)
        }
        if y > 0 { reach(index - width) }
        if x > 0 { reach(index - 1) }
        if x + 1 < width { reach(index + 1) }
        if y + 1 < height { reach(index + width) }
    }
    return output
}

/// A binary min-heap on (priority, age), sifting as scikit-image's `heap_general.pxi` does. Each item's order is one
/// 64-bit key, the priority's bits made to sort as the float does over the push count (ages stay below 2³²: one
/// push per pixel).
private struct FloodHeap {
    private var keys: [UInt64] = []
    private var indices: [Int32] = []

    mutating func push(priority: Float, age: UInt32, index: Int) {
        let bits = (priority + 0).bitPattern  // + 0: −0 sorts as +0, as `<` compares them
        let ordered = bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
        keys.append(UInt64(ordered) << 32 | UInt64(age))
        indices.append(Int32(index))
        var child = keys.count - 1
        while child > 0 {
            let parent = (child + 1) / 2 - 1
            guard keys[child] < keys[parent] else { break }
            keys.swapAt(child, parent)
            indices.swapAt(child, parent)
            child = parent
        }
    }

    /// The first item's priority and index.
    mutating func pop() -> (Float, Int)? {
        guard let first = keys.first else { return nil }
        let ordered = UInt32(truncatingIfNeeded: first >> 32)
        let priority = Float(bitPattern: ordered & 0x8000_0000 != 0 ? ordered & 0x7FFF_FFFF : ~ordered)
        let firstIndex = Int(indices[0])
        let (lastKey, lastIndex) = (keys.removeLast(), indices.removeLast())
        guard !keys.isEmpty else { return (priority, firstIndex) }
        keys[0] = lastKey
        indices[0] = lastIndex
        var i = 0
        while true {
            let (left, right) = (2 * i + 1, 2 * i + 2)
            guard left < keys.count else { break }
            var smallest = i
            if keys[left] < keys[i] { smallest = left }
            if right < keys.count && keys[right] < keys[smallest] { smallest = right }
            guard smallest != i else { break }
            keys.swapAt(i, smallest)
            indices.swapAt(i, smallest)
            i = smallest
        }
        return (priority, firstIndex)
    }
}
