//! Grounding tags and image placeholders (swift_template::vision) against values worked out by
//! hand from ms-swift's `normalize_bbox`, `_get_bbox_str` and Qwen2-VL's `replace_ref`/
//! `replace_bbox` (swift/template/base.py, templates/qwen.py).

use swift_plugin_api::{Message, Objects, StandardRow};
use swift_template::vision::{expand_images, normalize_bbox, prepare_row};
use swift_template::{Encoded, NormBbox, VisionOptions, IGNORE_INDEX};

fn qwen2_vl() -> VisionOptions {
    VisionOptions {
        image: "<|vision_start|><|image_pad|><|vision_end|>".into(),
        ref_format: "<|object_ref_start|>{ref}<|object_ref_end|>".into(),
        bbox_format: "<|box_start|>{points}<|box_end|>".into(),
        norm_bbox: NormBbox::Norm1000,
    }
}

fn grounding_row() -> StandardRow {
    StandardRow {
        messages: vec![
            Message::new("user", "<image><image>Find <ref-object>"),
            Message::new("assistant", "<ref-object><bbox> and <ref-object><bbox>"),
        ],
        images: vec!["a.jpg".into(), "b.jpg".into()],
        objects: Some(Box::new(Objects {
            refs: vec!["the dog".into(), "the dog".into(), "a cat".into()],
            bbox: vec![vec![30.0, 16.8, 150.0, 84.0], vec![0.0, 0.0, 20.0, 10.0]],
            bbox_type: None,
            image_id: vec![0, 1],
        })),
        ..Default::default()
    }
}

#[test]
fn qwen2_vl_boxes_are_normalised_to_1000() {
    // Image 0 is 300x168 (mllm-demo's 1.jpg), image 1 is 40x40.
    let out = prepare_row(&grounding_row(), &[(300, 168), (40, 40)], &qwen2_vl()).unwrap();
    assert_eq!(
        out.messages[0].content,
        "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>Find \
         <|object_ref_start|>the dog<|object_ref_end|>"
    );
    assert_eq!(
        out.messages[1].content,
        "<|object_ref_start|>the dog<|object_ref_end|><|box_start|>(100,100),(500,500)<|box_end|> and \
         <|object_ref_start|>a cat<|object_ref_end|><|box_start|>(0,0),(500,250)<|box_end|>"
    );
}

#[test]
fn base_convention_and_norm1_boxes() {
    let mut row = grounding_row();
    row.objects.as_mut().unwrap().bbox_type = Some("norm1".into());
    row.objects.as_mut().unwrap().bbox = vec![vec![0.0025, 0.0035, 0.5, 0.0125], vec![1.0, 1.0]];
    let out = prepare_row(&row, &[(300, 168), (40, 40)], &VisionOptions::default()).unwrap();
    // Python's round: half to even (2.5 -> 2, 3.5 -> 4, 12.5 -> 12).
    assert_eq!(
        out.messages[1].content,
        "the dog[(2,4),(500,12)] and a cat[(1000,1000)]"
    );
    assert!(out.messages[0]
        .content
        .starts_with("<image><image>Find the dog"));
    // `none`: pixels of the stored image.
    assert_eq!(
        normalize_bbox(&[30.4, 16.5, 150.5, 84.0], None, 300, 168, NormBbox::None),
        vec![30, 16, 150, 84]
    );
}

#[test]
fn tags_beyond_the_objects_stay_text_and_a_box_on_a_missing_image_is_an_error() {
    let mut row = grounding_row();
    row.messages[1]
        .content
        .push_str(" <bbox><ref-object><ref-object>");
    let out = prepare_row(&row, &[(300, 168), (40, 40)], &VisionOptions::default()).unwrap();
    assert!(
        out.messages[1]
            .content
            .ends_with(" <bbox><ref-object><ref-object>"),
        "{}",
        out.messages[1].content
    );
    let e = prepare_row(&grounding_row(), &[(300, 168)], &VisionOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("bbox 1 is on image 1 but the row has 1 image"),
        "{e}"
    );
}

#[test]
fn placeholders_expand_to_each_images_positions() {
    let mut enc = Encoded {
        input_ids: vec![1, 9, 2, 9, 3],
        labels: vec![IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 3],
        loss_scale: vec![0.0, 0.0, 0.0, 0.0, 1.0],
        spans: vec![],
        truncated: 0,
    };
    expand_images(&mut enc, 9, &[3, 2]).unwrap();
    assert_eq!(enc.input_ids, vec![1, 9, 9, 9, 2, 9, 9, 3]);
    assert_eq!(enc.labels[7], 3);
    assert!(enc.labels[..7].iter().all(|&l| l == IGNORE_INDEX));
    assert_eq!(enc.loss_scale, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    let e = expand_images(&mut enc.clone(), 9, &[3]).unwrap_err();
    assert!(
        e.to_string()
            .contains("5 image placeholder token(s) (id 9) for 1 image(s)"),
        "{e}"
    );
}
