import XCTest
import HistoCore
import HistoData
import HistoNN
@testable import HistoMethods

final class SegmentationModelTests: XCTestCase {
    func testUNetOutputsLogitsOfTheInputSize() throws {
        for variant in [SegmentationUNet.Variant.ciampi, .ssl4mis] {
            for upsampling in [SegmentationUNet.Upsampling.bilinear, .transposed] {
                var configuration = SegmentationUNet.Configuration.cpu(classes: 3, variant: variant)
                configuration.upsampling = upsampling
                let model = SegmentationUNet(configuration, generator: RandomGenerator(seed: 1))
                let x = RandomGenerator(seed: 2).normal([2, 3, 32, 48])
                XCTAssertEqual(try model(x).eval().shape, [2, 3, 32, 48], "\(variant) \(upsampling)")
                model.train(false)
                XCTAssertEqual(try model(x).eval().shape, [2, 3, 32, 48], "\(variant) \(upsampling), eval mode")
            }
        }
    }

    func testResNetFPNOutputsLogitsOfTheInputSize() throws {
        let model = ResNetFPN(.cpu(classes: 2), generator: RandomGenerator(seed: 1))
        let x = RandomGenerator(seed: 2).normal([2, 3, 64, 96])
        XCTAssertEqual(try model(x).eval().shape, [2, 2, 64, 96])
        model.train(false)
        XCTAssertEqual(try model(x).eval().shape, [2, 2, 64, 96])
    }

    func testInputsOffTheDownsamplingGridAreReportedNotCrashed() {
        let unet = SegmentationUNet(.cpu(classes: 2), generator: RandomGenerator(seed: 1))
        XCTAssertThrowsError(try unet(Tensor.zeros([1, 3, 40, 32])).eval()) { error in
            XCTAssertTrue("\(error)".contains("[1, 3, 40, 32]") && "\(error)".contains("16"), "\(error)")
        }
        let fpn = ResNetFPN(.cpu(classes: 2), generator: RandomGenerator(seed: 1))
        XCTAssertThrowsError(try fpn(Tensor.zeros([1, 3, 48, 64])).eval()) { error in
            XCTAssertTrue("\(error)".contains("[1, 3, 48, 64]") && "\(error)".contains("32"), "\(error)")
        }
    }

    /// Whole-image inference pads to the grid and crops back; tiled inference covers the same image.
    func testWholeImageLogitsHaveTheImageSize() throws {
        let model = SegmentationUNet(.cpu(classes: 2), generator: RandomGenerator(seed: 1))
        model.train(false)
        let image = try Planes(channels: 3, height: 37, width: 50, values: try RandomGenerator(seed: 3).uniform([3 * 37 * 50]).toArray())
        let whole = try model.logits(of: image)
        XCTAssertEqual(whole.shape, [2, 37, 50])
        let tiled = try model.logits(of: image, tiling: InferenceTiling(size: 32, stride: 16))
        XCTAssertEqual(tiled.shape, [2, 37, 50])
        XCTAssertThrowsError(try model.logits(of: image, tiling: InferenceTiling(size: 24, stride: 24)))
    }

    /// Parameter counts and names against the PyTorch references (counts from the reference modules built in
    /// PyTorch 2.13; names are their `state_dict` keys).
    func testPaperSizeUNetMatchesTheReferenceCounts() {
        let ciampi = SegmentationUNet(.paper(classes: 2), generator: RandomGenerator(seed: 1))
        XCTAssertEqual(ciampi.parameterCount(), 1_841_794)
        var configuration = SegmentationUNet.Configuration.paper(classes: 2, variant: .ssl4mis)
        XCTAssertEqual(SegmentationUNet(configuration, generator: RandomGenerator(seed: 1)).parameterCount(), 1_813_762)
        configuration = .paper(classes: 2)
        configuration.upsampling = .transposed
        XCTAssertEqual(SegmentationUNet(configuration, generator: RandomGenerator(seed: 1)).parameterCount(), 1_972_354)
        XCTAssertEqual(SegmentationUNet(.cpu(classes: 2), generator: RandomGenerator(seed: 1)).parameterCount(), 461_890)

        let names = Set(ciampi.stateTensors().map(\.name))
        XCTAssertEqual(names.count, 122, "the reference state_dict without BN num_batches_tracked")
        for name in ["encoder.in_conv.conv_conv.4.weight", "encoder.down4.maxpool_conv.1.conv_conv.5.running_var",
                     "main_decoder.up1.conv1x1.weight", "main_decoder.up4.conv.conv.4.bias", "out_conv.6.bias"] {
            XCTAssertTrue(names.contains(name), name)
        }
    }

    /// smp's `FPN('resnet34', classes=K)` has 23,155,264 + 129·K parameters (23,155,522 for K = 2): the "23.2M" of
    /// SPEC §1 rounded. ImageNet weights change values, not the count; BN running statistics are buffers in both.
    func testPaperSizeResNet34FPNMatchesSmpsCount() {
        let model = ResNetFPN(.paper(classes: 2), generator: RandomGenerator(seed: 1))
        let count = model.parameterCount()
        XCTAssertEqual(count, 23_155_522)
        XCTAssertEqual(model.encoder.parameterCount(), 21_284_672, "torchvision resnet34 without fc")
        XCTAssertLessThan(abs(Double(count) - 23.2e6) / 23.2e6, 0.005, "\(count) vs smp's 23.2M")
        XCTAssertEqual(ResNetFPN(.paper(classes: 2, depth: .resnet18), generator: RandomGenerator(seed: 1)).parameterCount(), 13_047_362)
        XCTAssertEqual(ResNetFPN(.cpu(classes: 2), generator: RandomGenerator(seed: 1)).parameterCount(), 819_602)

        let names = Set(model.stateTensors().map(\.name))
        XCTAssertEqual(names.count, 211, "smp's state_dict without BN num_batches_tracked")
        for name in ["encoder.conv1.weight", "encoder.layer3.5.bn2.running_mean", "encoder.layer2.0.downsample.1.weight",
                     "decoder.p5.bias", "decoder.p2.skip_conv.weight", "decoder.seg_blocks.0.block.2.block.1.weight",
                     "decoder.seg_blocks.3.block.0.block.0.weight", "segmentation_head.0.bias"] {
            XCTAssertTrue(names.contains(name), name)
        }
    }
}
