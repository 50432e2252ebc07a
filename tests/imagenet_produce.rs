//! Checks the Lite0 port end to end on real photos. Grocery photos of
//! produce that ImageNet has classes for go through pantry's own decoding
//! and preprocessing. The true ImageNet class must be in the top 5 for at
//! least 38 of these 40 photos, as it is for the reference network.

use std::path::PathBuf;

use pantry::backbone::efficientnet::EfficientNet;
use pantry::backbone::{weights, BackboneKind};
use pantry::data::image::decode_for;
use pantry::data::transform::Preprocess;
use pantry::predict::top_k;

/// Grocery train class folder and the ImageNet-1k class index of that produce.
const PRODUCE: [(&str, usize); 8] = [
    ("Fruit/Banana/Banana", 954),
    ("Fruit/Apple/Granny-Smith/Granny-Smith", 948),
    ("Fruit/Lemon/Lemon", 951),
    ("Fruit/Pineapple/Pineapple", 953),
    ("Vegetables/Cucumber/Cucumber", 943),
    ("Vegetables/Zucchini/Zucchini", 939),
    ("Fruit/Orange/Orange", 950),
    ("Fruit/Pomegranate/Pomegranate", 957),
];

#[test]
fn true_class_in_top5_on_produce_photos() {
    let Some(grocery) = std::env::var_os("PANTRY_GROCERY_DIR").map(PathBuf::from) else {
        eprintln!(
            "skipped: PANTRY_GROCERY_DIR is not set (needs the Grocery Store dataset folder)"
        );
        return;
    };
    let kind = BackboneKind::Lite0;
    let (_, weights) = weights::load(kind, None).expect("Lite0 weights load");
    let net = EfficientNet::from_weights(kind, &weights).unwrap();
    let preprocess = Preprocess::for_resolution(kind.resolution());

    let mut hits = 0;
    let mut misses = Vec::new();
    for (prefix, class) in PRODUCE {
        for number in 1..=5 {
            let path = grocery.join(format!("train/{prefix}_{number:03}.jpg"));
            let image = decode_for(&path, preprocess.resolution).unwrap();
            let logits = net.logits(&preprocess.apply(&image), 1).unwrap();
            let best = top_k(&logits, 5);
            if best.contains(&class) {
                hits += 1;
            } else {
                misses.push(format!(
                    "{} (top 5 {best:?}, expected {class})",
                    path.display()
                ));
            }
        }
    }
    eprintln!("true ImageNet class in the top 5 for {hits} of 40 photos; misses: {misses:#?}");
    assert!(
        hits >= 38,
        "only {hits} of 40 photos have the true class in the top 5: {misses:#?}"
    );
}
