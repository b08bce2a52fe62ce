//! Image references: a path relative to a base folder, a data URL and bare base64 give the same
//! pixels; a remote URL, a missing file and a non-image are refused naming the reference.

use std::path::{Path, PathBuf};

use base64::Engine;
use swift_vision::{load_image, VisionError};

#[allow(dead_code)]
#[path = "../../../tests/common/setup.rs"]
mod setup;

fn images() -> PathBuf {
    setup::asset("llamafactory/data/mllm_demo_data")
}

#[test]
fn paths_data_urls_and_base64_agree() {
    let dir = images();
    let from_path = load_image("2.jpg", Some(&dir)).unwrap();
    let abs = load_image(
        dir.join("2.jpg").to_str().unwrap(),
        Some(Path::new("/nowhere")),
    )
    .unwrap();
    assert_eq!(from_path, abs);
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join("2.jpg")).unwrap());
    assert_eq!(
        load_image(&format!("data:image/jpeg;base64,{b64}"), None).unwrap(),
        from_path
    );
    assert_eq!(load_image(&b64, None).unwrap(), from_path);
    assert_eq!((from_path.width, from_path.height), (300, 199));
}

#[test]
fn png_is_read() {
    // A 2x1 RGBA PNG: red opaque, half-transparent green (alpha dropped, as convert("RGB")).
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAYAAAD0In+KAAAAD0lEQVR4nGP4z8DwHwgbABB5A359Y87XAAAAAElFTkSuQmCC";
    let img = load_image(png, None).unwrap();
    assert_eq!((img.width, img.height), (2, 1));
    assert_eq!(img.data, vec![255, 0, 0, 0, 255, 0]);
}

#[test]
fn refusals_name_the_reference() {
    let e = load_image("https://example.com/cat.jpg", None).unwrap_err();
    assert!(matches!(e, VisionError::Remote { .. }), "{e}");
    assert!(
        e.to_string().contains("https://example.com/cat.jpg") && e.to_string().contains("offline"),
        "{e}"
    );
    let e = load_image("imgs/missing.jpg", Some(Path::new("/data/set"))).unwrap_err();
    assert!(e.to_string().contains("/data/set/imgs/missing.jpg"), "{e}");
    let e = load_image("data:image/png;base64,AAAA", None).unwrap_err();
    assert!(e.to_string().contains("not a JPEG or PNG"), "{e}");
}
