//! Writes the committed seed corpora, `seeds/api/`, `seeds/differential/` and `seeds/backward/`: ResNet,
//! MobileNet, ShuffleNet, EfficientNet and transformer-MLP 1x1 layers scaled to each target's
//! caps, and edge shapes (empty, 1x1, one channel, depthwise-like groups, strides past the
//! image, padding-only outputs, tile edges, every invalid parameter, sizes near `usize::MAX`).
//!
//! Run from `fuzz/`: `cargo run --example gen_seeds`. Each seed is checked to decode (with
//! `arbitrary`, as the fuzz targets decode it) to exactly the case it encodes.
use arbitrary::{Arbitrary, Unstructured};
use pointwise_fuzz::{ApiCase, DiffCase, Encode};
use std::fmt::Debug;
use std::path::Path;

fn write<T: Encode + for<'a> Arbitrary<'a> + PartialEq + Debug>(dir: &Path, name: &str, case: &T) {
    let bytes = case.to_bytes();
    let decoded = T::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
    assert_eq!(&decoded, case, "seed {name} does not round-trip");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// A valid `c -> k` layer on `n x h x w`, ReLU, bias, no residual, Auto, every slice exact.
fn api(c: u32, k: u32, n: u32, h: u32, w: u32) -> ApiCase {
    ApiCase {
        in_channels: c,
        out_channels: k,
        groups: 1,
        stride: [1, 1],
        padding: 0,
        pad: [0; 4],
        nhwc: false,
        activation: 1,
        act_bits: [0, 0],
        huge: 0,
        kernel: 0,
        threads: 0,
        tiling: 0,
        n,
        h,
        w,
        weights_len: 0,
        bias_len: 0,
        input_len: 0,
        residual_len: i16::MIN,
        output_len: 0,
        special: 0,
        special_at: 0,
        seed: 1,
        shuffle_groups: 1,
        name: *b"portable",
        slope_len: 0,
        input_major: false,
        in_place: false,
    }
}

/// Activation selectors shared by both targets' decoders.
const IDENTITY: u8 = 0;
const RELU: u8 = 1;
const RELU6: u8 = 2;
const CLAMP: u8 = 3;
const LEAKY: u8 = 4;
const HARDSWISH: u8 = 5;
const SILU: u8 = 6;
const GELU: u8 = 7;
const PRELU: u8 = 8;
const HARD_SIGMOID: u8 = 9;
const SIGMOID: u8 = 10;
const TANH: u8 = 11;
const GELU_TANH: u8 = 12;

fn api_seeds() -> Vec<(&'static str, ApiCase)> {
    let base = api(8, 12, 1, 5, 6);
    let nan = f32::NAN.to_bits();
    vec![
        // ResNet-50 bottlenecks at 14x14 (56x56 and 28x28 stages scaled to the work cap).
        ("resnet50_reduce_256_64", api(256, 64, 1, 14, 14)),
        (
            "resnet50_expand_64_256_residual",
            ApiCase {
                residual_len: 0,
                ..api(64, 256, 1, 14, 14)
            },
        ),
        (
            "resnet50_downsample_256_512_s2",
            ApiCase {
                stride: [2, 2],
                activation: IDENTITY,
                ..api(256, 512, 1, 14, 14)
            },
        ),
        ("resnet50_conv5_expand_512_2048", api(512, 2048, 1, 4, 4)),
        // Over the work cap: the full 56x56 layer, run only on its error path.
        (
            "resnet50_full_256_512_s2_56",
            ApiCase {
                stride: [2, 2],
                ..api(256, 512, 1, 56, 56)
            },
        ),
        // MobileNetV2/V3 (NHWC as TFLite runs them), EfficientNet, ShuffleNet, ViT MLP.
        (
            "mobilenet_v2_expand_24_144_relu6",
            ApiCase {
                nhwc: true,
                activation: RELU6,
                ..api(24, 144, 1, 14, 14)
            },
        ),
        (
            "mobilenet_v2_project_144_24_residual",
            ApiCase {
                nhwc: true,
                activation: IDENTITY,
                residual_len: 0,
                ..api(144, 24, 1, 14, 14)
            },
        ),
        (
            "mobilenet_v3_40_240_hardswish",
            ApiCase {
                nhwc: true,
                activation: HARDSWISH,
                ..api(40, 240, 2, 7, 7)
            },
        ),
        (
            "efficientnet_32_192_silu",
            ApiCase {
                activation: SILU,
                ..api(32, 192, 1, 12, 12)
            },
        ),
        (
            "shufflenet_240_240_g3_shuffle",
            ApiCase {
                groups: 3,
                shuffle_groups: 3,
                ..api(240, 240, 1, 14, 14)
            },
        ),
        (
            "shufflenet_384_384_g8",
            ApiCase {
                groups: 8,
                shuffle_groups: 8,
                nhwc: true,
                ..api(384, 384, 1, 7, 7)
            },
        ),
        (
            "vit_mlp_96_384_gelu_tokens",
            ApiCase {
                nhwc: true,
                activation: GELU,
                ..api(96, 384, 1, 1, 197)
            },
        ),
        (
            "threads_3_64_64_32x32",
            ApiCase {
                threads: 4,
                ..api(64, 64, 1, 32, 32)
            },
        ),
        (
            "threads_rayon_nhwc",
            ApiCase {
                threads: 5,
                nhwc: true,
                ..api(64, 64, 2, 24, 24)
            },
        ),
        // Every kernel forced, with each tiling choice.
        ("force_avx512", ApiCase { kernel: 1, ..base }),
        (
            "force_avx2_tile0",
            ApiCase {
                kernel: 2,
                tiling: 1,
                ..base
            },
        ),
        ("force_neon", ApiCase { kernel: 3, ..base }),
        (
            "force_portable_tile1_fold",
            ApiCase {
                kernel: 4,
                tiling: 4,
                ..base
            },
        ),
        (
            "force_matrixmultiply_tile",
            ApiCase {
                kernel: 5,
                tiling: 1,
                ..base
            },
        ),
        ("force_reference", ApiCase { kernel: 6, ..base }),
        (
            "force_avx512_tile_past_end",
            ApiCase {
                kernel: 1,
                tiling: 99,
                ..base
            },
        ),
        // Edge shapes.
        ("c1_k1_1x1", api(1, 1, 1, 1, 1)),
        (
            "depthwise_like_64_groups",
            ApiCase {
                groups: 64,
                ..api(64, 64, 1, 9, 9)
            },
        ),
        (
            "stride_past_image",
            ApiCase {
                stride: [5, 7],
                ..api(8, 8, 1, 3, 3)
            },
        ),
        (
            "padding_only_outputs",
            ApiCase {
                padding: 3,
                pad: [2, 2, 2, 2],
                residual_len: 0,
                ..api(4, 4, 1, 1, 1)
            },
        ),
        (
            "same_lower_stride3",
            ApiCase {
                padding: 2,
                stride: [3, 3],
                ..base
            },
        ),
        ("empty_batch", api(8, 12, 0, 5, 6)),
        (
            "empty_width_padded",
            ApiCase {
                padding: 3,
                pad: [2, 2, 2, 2],
                ..api(8, 12, 2, 5, 0)
            },
        ),
        // Invalid descriptors.
        ("in_channels_0", api(0, 12, 1, 5, 6)),
        ("groups_0", ApiCase { groups: 0, ..base }),
        ("groups_5_do_not_divide", ApiCase { groups: 5, ..base }),
        ("stride_0", ApiCase { stride: [0, 1], ..base }),
        (
            "clamp_nan",
            ApiCase {
                activation: CLAMP,
                act_bits: [nan, 1f32.to_bits()],
                ..base
            },
        ),
        (
            "clamp_min_gt_max",
            ApiCase {
                activation: CLAMP,
                act_bits: [2f32.to_bits(), 1f32.to_bits()],
                ..base
            },
        ),
        (
            "leaky_inf",
            ApiCase {
                activation: LEAKY,
                act_bits: [f32::INFINITY.to_bits(), 0],
                ..base
            },
        ),
        (
            "leaky_valid_slope",
            ApiCase {
                activation: LEAKY,
                act_bits: [0.1f32.to_bits(), 0],
                ..base
            },
        ),
        // Sizes whose buffers cannot exist.
        ("u32_max_channels", api(u32::MAX, u32::MAX, 1, 1, 1)),
        ("u32_max_dims", api(8, 12, u32::MAX, u32::MAX, u32::MAX)),
        (
            "usize_max_input_dims",
            ApiCase {
                huge: 0b1110_0000_0000,
                ..api(8, 12, 0, 0, 1)
            },
        ),
        (
            "usize_max_padding",
            ApiCase {
                padding: 3,
                huge: 0b1_1110_0000,
                ..base
            },
        ),
        (
            "u32_max_padding_s1",
            ApiCase {
                padding: 3,
                pad: [u32::MAX, 0, u32::MAX, 0],
                ..base
            },
        ),
        (
            "usize_max_stride",
            ApiCase {
                huge: 0b1_1000,
                padding: 3,
                pad: [u32::MAX; 4],
                ..base
            },
        ),
        // Empty, but the factors before the zero overflow (the known checked_product bug).
        (
            "empty_height_huge_batch",
            ApiCase {
                huge: 1 << 9,
                ..api(8, 12, 0, 0, 5)
            },
        ),
        // Wrong slice lengths, one at a time.
        (
            "weights_short",
            ApiCase {
                weights_len: -1,
                ..base
            },
        ),
        ("bias_long", ApiCase { bias_len: 1, ..base }),
        (
            "no_bias",
            ApiCase {
                bias_len: i16::MIN,
                ..base
            },
        ),
        ("input_short", ApiCase { input_len: -1, ..base }),
        (
            "residual_long",
            ApiCase {
                residual_len: 1,
                ..base
            },
        ),
        ("output_short", ApiCase { output_len: -1, ..base }),
        // Data and names.
        (
            "nan_input",
            ApiCase {
                special: 1,
                special_at: 17,
                ..base
            },
        ),
        (
            "inf_input_nhwc",
            ApiCase {
                special: 2,
                special_at: 3,
                nhwc: true,
                ..base
            },
        ),
        (
            "bad_kernel_name",
            ApiCase {
                name: *b"sse9\0\0\0\0",
                ..base
            },
        ),
        (
            "shuffle_groups_do_not_divide",
            ApiCase {
                shuffle_groups: 5,
                ..base
            },
        ),
        // The activations of issue 10 and the builder's inputs.
        (
            "prelu_slopes_exact",
            ApiCase {
                activation: PRELU,
                slope_len: 1,
                ..api(64, 96, 1, 9, 9)
            },
        ),
        (
            "prelu_without_slopes",
            ApiCase {
                activation: PRELU,
                ..base
            },
        ),
        (
            "prelu_slopes_short",
            ApiCase {
                activation: PRELU,
                slope_len: -1,
                ..base
            },
        ),
        (
            "slopes_given_to_relu",
            ApiCase {
                slope_len: 1,
                ..base
            },
        ),
        (
            "hard_sigmoid_onnx_defaults",
            ApiCase {
                activation: HARD_SIGMOID,
                act_bits: [0.2f32.to_bits(), 0.5f32.to_bits()],
                ..api(32, 48, 2, 7, 7)
            },
        ),
        (
            "hard_sigmoid_nan_alpha",
            ApiCase {
                activation: HARD_SIGMOID,
                act_bits: [nan, 0],
                ..base
            },
        ),
        (
            "sigmoid_inf_input",
            ApiCase {
                activation: SIGMOID,
                special: 2,
                ..api(16, 40, 1, 6, 6)
            },
        ),
        (
            "tanh_nhwc",
            ApiCase {
                activation: TANH,
                nhwc: true,
                ..api(24, 33, 1, 5, 7)
            },
        ),
        (
            "gelu_tanh_neg_inf_input",
            ApiCase {
                activation: GELU_TANH,
                special: 3,
                ..api(24, 24, 1, 8, 8)
            },
        ),
        (
            "input_major_weights_grouped",
            ApiCase {
                input_major: true,
                groups: 4,
                ..api(32, 64, 1, 6, 6)
            },
        ),
        (
            "in_place_residual_padded",
            ApiCase {
                in_place: true,
                padding: 3,
                pad: [1, 0, 2, 1],
                ..api(16, 24, 2, 5, 6)
            },
        ),
        (
            "in_place_residual_output_short",
            ApiCase {
                in_place: true,
                output_len: -1,
                ..base
            },
        ),
    ]
}

/// A valid problem: `g` groups of `cg -> kg` channels on `n x h x w`, ReLU, bias, integer data.
fn diff(g: u8, cg: u8, kg: u8, n: u8, h: u8, w: u8) -> DiffCase {
    assert!((1..=96).contains(&g) && usize::from(cg) * usize::from(g) <= 96 && usize::from(kg) * usize::from(g) <= 96);
    let case = DiffCase {
        n,
        groups: g - 1,
        cg: cg - 1,
        kg: kg - 1,
        h,
        w,
        stride: 0,
        padding: 0,
        pads: 0,
        nhwc: false,
        activation: RELU,
        act_param: [0, 0],
        bias: true,
        residual: false,
        exact: true,
        tiling: 0,
        threads: 0,
        seed: 1,
        in_place: false,
    };
    let conv = case.conv();
    assert_eq!(
        (conv.groups, conv.in_channels, conv.out_channels),
        (usize::from(g), usize::from(g * cg), usize::from(g * kg))
    );
    case
}

/// `stride` selector for `(sh, sw)` in `1..=3`.
fn stride(sh: u8, sw: u8) -> u8 {
    (sh - 1) | ((sw - 1) << 2)
}

/// `pads` selector for explicit borders in `0..=2`.
fn pads(top: u8, bottom: u8, left: u8, right: u8) -> u8 {
    top | (bottom << 2) | (left << 4) | (right << 6)
}

fn diff_seeds() -> Vec<(&'static str, DiffCase)> {
    vec![
        // ResNet bottleneck (256 -> 64 -> 256, 512 s2) scaled to 96 channels and 17x17.
        ("resnet_reduce_64_16", diff(1, 64, 16, 1, 14, 14)),
        (
            "resnet_expand_16_64_residual",
            DiffCase {
                residual: true,
                exact: false,
                ..diff(1, 16, 64, 2, 14, 14)
            },
        ),
        (
            "resnet_downsample_64_96_s2",
            DiffCase {
                stride: stride(2, 2),
                activation: IDENTITY,
                ..diff(1, 64, 96, 1, 17, 17)
            },
        ),
        (
            "resnet_96_96_batch4_threads",
            DiffCase {
                threads: 1,
                exact: false,
                ..diff(1, 96, 96, 4, 17, 17)
            },
        ),
        // MobileNetV2/V3 (NHWC), EfficientNet, ShuffleNet, depthwise-like, GELU MLP.
        (
            "mobilenet_v2_expand_16_96_relu6",
            DiffCase {
                nhwc: true,
                activation: RELU6,
                ..diff(1, 16, 96, 1, 17, 17)
            },
        ),
        (
            "mobilenet_v2_project_96_16_residual",
            DiffCase {
                nhwc: true,
                activation: IDENTITY,
                residual: true,
                ..diff(1, 96, 16, 2, 9, 9)
            },
        ),
        (
            "mobilenet_v3_40_96_hardswish",
            DiffCase {
                nhwc: true,
                activation: HARDSWISH,
                exact: false,
                ..diff(1, 40, 96, 1, 7, 7)
            },
        ),
        (
            "efficientnet_24_96_silu",
            DiffCase {
                activation: SILU,
                exact: false,
                ..diff(1, 24, 96, 2, 8, 8)
            },
        ),
        ("shufflenet_48_48_g3", diff(3, 16, 16, 1, 14, 14)),
        (
            "shufflenet_64_96_g4_nhwc",
            DiffCase {
                nhwc: true,
                ..diff(4, 16, 24, 1, 7, 7)
            },
        ),
        ("shufflenet_96_96_g8", diff(8, 12, 12, 1, 7, 7)),
        ("depthwise_like_96_g96", diff(96, 1, 1, 1, 9, 9)),
        (
            "gelu_mlp_64_96_tokens",
            DiffCase {
                nhwc: true,
                activation: GELU,
                exact: false,
                ..diff(1, 64, 96, 1, 1, 17)
            },
        ),
        (
            "clamp_exact",
            DiffCase {
                activation: CLAMP,
                act_param: [5, 9],
                residual: true,
                ..diff(1, 33, 17, 2, 5, 5)
            },
        ),
        (
            "leaky_exact_negative_slope",
            DiffCase {
                activation: LEAKY,
                act_param: [0xf4, 0],
                ..diff(1, 9, 31, 1, 6, 6)
            },
        ),
        // Edges: one channel, 1x1 images, 1xW and Hx1, strides past the image, padding-only
        // outputs, empty inputs, tile edges, forced tilings.
        ("c1_k1_1x1", diff(1, 1, 1, 1, 1, 1)),
        ("c1_k96", diff(1, 1, 96, 1, 5, 5)),
        ("c96_k1", diff(1, 96, 1, 1, 5, 5)),
        ("row_1x17", diff(1, 7, 9, 3, 1, 17)),
        ("column_17x1", diff(1, 9, 7, 3, 17, 1)),
        (
            "stride3_on_1x1",
            DiffCase {
                stride: stride(3, 3),
                ..diff(1, 8, 8, 2, 1, 1)
            },
        ),
        (
            "padding2_on_1x1",
            DiffCase {
                padding: 3,
                pads: pads(2, 2, 2, 2),
                residual: true,
                ..diff(1, 8, 15, 1, 1, 1)
            },
        ),
        (
            "asymmetric_padding_stride_2_3",
            DiffCase {
                padding: 3,
                pads: pads(0, 2, 1, 0),
                stride: stride(2, 3),
                ..diff(1, 17, 33, 2, 13, 11)
            },
        ),
        (
            "same_upper_stride2_nhwc",
            DiffCase {
                padding: 1,
                stride: stride(2, 2),
                nhwc: true,
                ..diff(2, 15, 8, 1, 9, 10)
            },
        ),
        ("empty_batch", diff(1, 8, 8, 0, 5, 5)),
        (
            "empty_height_padded",
            DiffCase {
                padding: 3,
                pads: pads(2, 2, 2, 2),
                ..diff(1, 8, 8, 2, 0, 5)
            },
        ),
        (
            "tile_edges_95_33",
            DiffCase {
                exact: false,
                activation: GELU,
                ..diff(1, 95, 33, 1, 3, 5)
            },
        ),
        (
            "tile0_unfolded",
            DiffCase {
                tiling: 1,
                ..diff(1, 32, 48, 2, 8, 9)
            },
        ),
        (
            "tile0_folded_nhwc",
            DiffCase {
                tiling: 2,
                nhwc: true,
                ..diff(1, 32, 48, 2, 8, 9)
            },
        ),
        (
            "tile1_unfolded_tiny",
            DiffCase {
                tiling: 3,
                ..diff(2, 2, 3, 1, 4, 5)
            },
        ),
        (
            "tile1_folded_strided",
            DiffCase {
                tiling: 4,
                stride: stride(2, 1),
                padding: 3,
                pads: pads(1, 1, 1, 1),
                ..diff(1, 20, 24, 3, 7, 7)
            },
        ),
        (
            "prelu_in_place_residual_padded",
            DiffCase {
                activation: PRELU,
                residual: true,
                in_place: true,
                padding: 3,
                pads: pads(1, 2, 0, 1),
                ..diff(1, 12, 20, 2, 6, 7)
            },
        ),
        (
            "hard_sigmoid_grouped_real",
            DiffCase {
                activation: HARD_SIGMOID,
                act_param: [3, 4],
                exact: false,
                ..diff(4, 6, 5, 1, 9, 9)
            },
        ),
        (
            "sigmoid_nhwc_in_place",
            DiffCase {
                activation: SIGMOID,
                nhwc: true,
                exact: false,
                residual: true,
                in_place: true,
                ..diff(1, 33, 17, 1, 5, 11)
            },
        ),
        (
            "tanh_strided",
            DiffCase {
                activation: TANH,
                stride: stride(2, 3),
                exact: false,
                ..diff(1, 40, 48, 1, 13, 13)
            },
        ),
        (
            "gelu_tanh_tile_forced",
            DiffCase {
                activation: GELU_TANH,
                tiling: 3,
                exact: false,
                ..diff(2, 16, 24, 1, 7, 9)
            },
        ),
    ]
}

/// An empty `seeds/<target>/` (old seeds are removed, so renamed cases leave nothing behind).
fn fresh_dir(target: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear old seeds");
    }
    std::fs::create_dir_all(&dir).expect("create seed directory");
    dir
}

fn main() {
    let dir = fresh_dir("api");
    let seeds = api_seeds();
    for (name, case) in &seeds {
        write(&dir, name, case);
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
    // The backward target decodes the same input as the differential target.
    for target in ["differential", "backward"] {
        let dir = fresh_dir(target);
        let seeds = diff_seeds();
        for (name, case) in &seeds {
            write(&dir, name, case);
        }
        println!("{} seeds in {}", seeds.len(), dir.display());
    }
}
