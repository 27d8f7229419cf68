import HistoCore

/// CDCL's MoNuSeg protocol (SPEC §5): every image cut into `count × count` non-overlapping crops (16 crops of 250²
/// per 1000² image), each a dataset item of its own (`Dataset.gridCropped(_:)`), and at inference each image cut
/// alike and the crops' probabilities stitched back (`ImageSegmenter`). Crops are ⌊H/n⌋ × ⌊W/n⌋; the last row
/// and column of crops also take the H mod n and W mod n remaining pixels, so that the crops tile the image
/// exactly and no pixel is left out of training or inference.
public struct GridCrops: Equatable, Sendable {
    /// Crops per side; 1 is the whole image.
    public let count: Int

    /// Throws when `count` is below 1, naming the option.
    public init(_ count: Int) throws {
        guard count >= 1 else {
            throw EngineError.invalidValue(op: "--grid-crops", message: "\(count) crops per side must be at least 1")
        }
        self.count = count
    }

    /// One crop: its place in the grid and the pixels of the stored image it covers.
    public struct Cell: Equatable, Sendable {
        public let row: Int
        public let column: Int
        public let y: Int
        public let x: Int
        public let height: Int
        public let width: Int
    }

    /// The crops of an image of `height × width`, row-major. Throws, naming the option and `image`, when the grid
    /// has more crops per side than the image has pixels.
    public func cells(height: Int, width: Int, image: String) throws -> [Cell] {
        guard count <= min(height, width) else {
            throw EngineError.invalidValue(op: "--grid-crops", message: "\(count) crops per side do not fit "
                                           + "\(image) (\(width)×\(height)): at most \(min(height, width))")
        }
        let (rowHeight, columnWidth) = (height / count, width / count)
        // The last crop of a row or column runs to the image's edge: it takes the remainder.
        func span(_ index: Int, _ step: Int, _ length: Int) -> (start: Int, length: Int) {
            (index * step, index == count - 1 ? length - index * step : step)
        }
        return (0..<count).flatMap { row in
            (0..<count).map { column in
                let (y, cellHeight) = span(row, rowHeight, height), (x, cellWidth) = span(column, columnWidth, width)
                return Cell(row: row, column: column, y: y, x: x, height: cellHeight, width: cellWidth)
            }
        }
    }

    /// The item name of `cell` of image `image`: `NAME@row,column` (0-based).
    public static func name(of cell: Cell, in image: String) -> String {
        "\(image)@\(cell.row),\(cell.column)"
    }

    /// The planes of `height × width` whose `cells` (the crops of `cells(height:width:image:)`) hold `pieces`, each
    /// of its cell's size and of one channel count.
    public static func stitch(_ pieces: [Planes], cells: [Cell], height: Int, width: Int) throws -> Planes {
        guard let channels = pieces.first?.channels, pieces.count == cells.count,
              zip(pieces, cells).allSatisfy({ $0.channels == channels && $0.height == $1.height
                                              && $0.width == $1.width }) else {
            throw EngineError.invalidValue(op: "GridCrops.stitch", message: "\(pieces.count) pieces do not match "
                                           + "\(cells.count) cells of one channel count")
        }
        var values = [Float](repeating: 0, count: channels * height * width)
        for (piece, cell) in zip(pieces, cells) {
            for c in 0..<channels {
                for row in 0..<cell.height {
                    let from = (c * cell.height + row) * cell.width
                    let to = (c * height + cell.y + row) * width + cell.x
                    values.replaceSubrange(to..<(to + cell.width), with: piece.values[from..<(from + cell.width)])
                }
            }
        }
        return try Planes(channels: channels, height: height, width: width, values: values)
    }
}

extension Image {
    /// The pixels of `cell`.
    public func cropped(to cell: GridCrops.Cell) -> Image {
        var out: [UInt16] = []
        out.reserveCapacity(cell.height * cell.width * channels)
        for y in cell.y..<(cell.y + cell.height) {
            let start = (y * width + cell.x) * channels
            out.append(contentsOf: samples[start..<(start + cell.width * channels)])
        }
        return Image(unchecked: cell.width, height: cell.height, channels: channels, bitDepth: bitDepth, samples: out)
    }
}

extension Planes {
    /// The values of `cell` in every channel.
    public func cropped(to cell: GridCrops.Cell) throws -> Planes {
        try crop(y: cell.y, x: cell.x, height: cell.height, width: cell.width, padding: .zero)
    }
}
