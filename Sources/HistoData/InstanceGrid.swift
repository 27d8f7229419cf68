/// Operations on row-major maps of instance ids (`labels[y * width + x]`, 0 = background): shared by the training
/// targets of `MaskClasses.boundary` here and by the instance metrics and post-processing of HistoMetrics.
public enum InstanceGrid {
    /// The 8-connected components of the foreground (label > 0), numbered 1, 2, … in raster order of each
    /// component's first pixel, as `scipy.ndimage.label` with a 3×3 structure and `skimage.measure.label` with
    /// `connectivity=2` number them. Touching pixels join whatever their labels are: this is the connectivity of the
    /// binary mask. Two passes with a union-find over provisional labels: O(pixels).
    public static func connectedComponents(_ labels: [Int32], width: Int,
                                           height: Int) -> (labels: [Int32], count: Int) {
        var provisional = [Int32](repeating: 0, count: labels.count)
        var parent: [Int32] = [0]  // parent[label]; index 0 is background
        func root(_ label: Int32) -> Int32 {
            var label = label
            while parent[Int(label)] != label {
                parent[Int(label)] = parent[Int(parent[Int(label)])]  // path halving
                label = parent[Int(label)]
            }
            return label
        }
        for y in 0..<height {
            for x in 0..<width where labels[y * width + x] > 0 {
                // The neighbours already visited in raster order: the three above and the one to the left.
                var label: Int32 = 0
                func join(_ neighbour: Int) {
                    let other = provisional[neighbour]
                    guard other != 0 else { return }
                    let otherRoot = root(other)
                    if label == 0 { label = otherRoot; return }
                    if otherRoot != label {
                        let (keep, merge) = otherRoot < label ? (otherRoot, label) : (label, otherRoot)
                        parent[Int(merge)] = keep
                        label = keep
                    }
                }
                if y > 0 {
                    let above = (y - 1) * width + x
                    if x > 0 { join(above - 1) }
                    join(above)
                    if x + 1 < width { join(above + 1) }
                }
                if x > 0 { join(y * width + x - 1) }
                if label == 0 {
                    label = Int32(parent.count)
                    parent.append(label)
                }
                provisional[y * width + x] = label
            }
        }
        var final = [Int32](repeating: 0, count: parent.count)
        var count: Int32 = 0
        for i in provisional.indices where provisional[i] != 0 {
            let r = Int(root(provisional[i]))
            if final[r] == 0 {
                count += 1
                final[r] = count
            }
            provisional[i] = final[r]
        }
        return (provisional, Int(count))
    }

    /// The three-class nucleus target of an instance map: 0 background, 1 interior, 2 boundary. A pixel of an
    /// instance is boundary when a pixel of another label (another instance or background) lies within city-block
    /// distance `boundaryWidth` inside the image. Width 1 is `skimage.segmentation.find_boundaries(mode='inner')`
    /// (connectivity 1); width w is that boundary dilated w − 1 times by a 3×3 cross, kept on the foreground.
    /// The image border is no boundary: find_boundaries reflects there. A breadth-first search from the width-1
    /// boundary: O(pixels).
    public static func boundaryClasses(_ instances: [Int32], width: Int, height: Int, boundaryWidth: Int) -> [Int32] {
        var classes = instances.map { $0 > 0 ? Int32(1) : 0 }
        var depth = [Int](repeating: -1, count: instances.count)
        var queue: [Int] = []
        for y in 0..<height {
            for x in 0..<width {
                let i = y * width + x, label = instances[i]
                guard label > 0 else { continue }
                if (y > 0 && instances[i - width] != label) || (x > 0 && instances[i - 1] != label)
                    || (x + 1 < width && instances[i + 1] != label)
                    || (y + 1 < height && instances[i + width] != label) {
                    depth[i] = 0
                    queue.append(i)
                }
            }
        }
        var head = 0
        while head < queue.count {
            let i = queue[head]
            head += 1
            if instances[i] > 0 { classes[i] = 2 }
            guard depth[i] + 1 < boundaryWidth else { continue }
            let (y, x) = (i / width, i % width)
            for (inside, j) in [(y > 0, i - width), (x > 0, i - 1), (x + 1 < width, i + 1), (y + 1 < height, i + width)]
            where inside && depth[j] < 0 {
                depth[j] = depth[i] + 1
                queue.append(j)
            }
        }
        return classes
    }
}
