//! Label files, class folders and prediction inputs.

mod data_support;

use std::path::{Path, PathBuf};

use data_support::*;
use pantry::data::source::{collect_inputs, load, SkipReason};

const AWKWARD_LABELS: [&str; 5] = [
    "Bananas, apples & pears",
    "Crème fraîche",
    "\"Extra\" mature cheddar",
    "  padded label ",
    "Æblegrød 500 g",
];

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temporary folder")
}

fn labels_of(dataset: &pantry::data::source::Dataset) -> Vec<&str> {
    dataset
        .samples
        .iter()
        .map(|s| s.label.as_deref().unwrap())
        .collect()
}

/// Quotes a field the RFC 4180 way: wrapped in quotes, quotes doubled.
fn quoted(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

#[test]
fn csv_with_awkward_labels_bom_and_crlf() {
    let dir = temp();
    let mut text = String::from("\u{feff}id,file,label,notes\r\n");
    for (i, label) in AWKWARD_LABELS.iter().enumerate() {
        text.push_str(&format!("{i},img/{i}.jpg,{},\"a, b\"\r\n", quoted(label)));
    }
    let path = write(dir.path(), "labels.csv", text.as_bytes());
    let dataset = load(&path, None, true).unwrap();
    assert_eq!(labels_of(&dataset), AWKWARD_LABELS);
    assert_eq!(dataset.samples[2].path, dir.path().join("img/2.jpg"));
    assert!(dataset.skipped.is_empty());
}

#[test]
fn tsv_with_awkward_labels() {
    let dir = temp();
    let mut text = String::from("file\tlabel\n");
    for (i, label) in AWKWARD_LABELS.iter().enumerate() {
        // Plain fields need no quoting in TSV; the quoted one is written as
        // a CSV library with a tab delimiter writes it.
        let field = if label.contains('"') {
            quoted(label)
        } else {
            label.to_string()
        };
        text.push_str(&format!("img/{i}.jpg\t{field}\n"));
    }
    let path = write(dir.path(), "labels.tsv", text.as_bytes());
    let dataset = load(&path, None, true).unwrap();
    assert_eq!(labels_of(&dataset), AWKWARD_LABELS);
    let mut expected: Vec<String> = AWKWARD_LABELS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(dataset.labels(), expected);
}

#[test]
fn txt_is_tab_separated_with_bom_and_crlf() {
    let dir = temp();
    let text = "\u{feff}label\tfile\r\nCrème fraîche\ta.jpg\r\nBananas, apples & pears\tb.jpg\r\n";
    let dataset = load(&write(dir.path(), "list.txt", text.as_bytes()), None, true).unwrap();
    assert_eq!(
        labels_of(&dataset),
        ["Crème fraîche", "Bananas, apples & pears"]
    );
    assert_eq!(dataset.samples[1].path, dir.path().join("b.jpg"));
    assert_eq!(dataset.samples[1].name, "b.jpg", "named as written");
}

#[test]
fn paths_resolve_against_label_file_or_override() {
    let dir = temp();
    let text = "file\tlabel\nsub/a.jpg\tx\nb.png\ty\n";
    let path = write(dir.path(), "lists/train.tsv", text.as_bytes());

    let dataset = load(&path, None, true).unwrap();
    let paths: Vec<&Path> = dataset.samples.iter().map(|s| s.path.as_path()).collect();
    assert_eq!(
        paths,
        [
            dir.path().join("lists/sub/a.jpg"),
            dir.path().join("lists/b.png")
        ]
    );

    let images = dir.path().join("photos");
    let dataset = load(&path, Some(&images), true).unwrap();
    assert_eq!(dataset.samples[0].path, images.join("sub/a.jpg"));
    assert_eq!(dataset.samples[1].path, images.join("b.png"));
}

#[test]
fn unlabelled_file_loads_without_labels() {
    let dir = temp();
    let path = write(dir.path(), "test.tsv", b"file\na.jpg\nb.jpg\n");
    let dataset = load(&path, None, false).unwrap();
    assert_eq!(dataset.samples.len(), 2);
    assert!(dataset.samples.iter().all(|s| s.label.is_none()));
    assert!(dataset.labels().is_empty());
}

fn load_error(name: &str, text: &str, require_labels: bool) -> String {
    let dir = temp();
    let path = write(dir.path(), name, text.as_bytes());
    let error = load(&path, None, require_labels).expect_err("loading should fail");
    let message = format!("{error:#}");
    assert!(
        message.contains(&path.display().to_string()),
        "{message:?} does not name the file"
    );
    message
}

#[test]
fn label_file_errors_name_file_and_line() {
    let message = load_error("empty.tsv", "", true);
    assert!(message.contains("empty"), "{message}");

    let message = load_error("nofile.tsv", "path\tlabel\na.jpg\tx\n", true);
    assert!(
        message.contains("line 1") && message.contains("`file`"),
        "{message}"
    );

    let message = load_error("nolabel.tsv", "file\ta.jpg\n", true);
    assert!(
        message.contains("line 1") && message.contains("`label`"),
        "{message}"
    );

    let message = load_error("short.tsv", "file\tlabel\na.jpg\tx\nb.jpg\n", true);
    assert!(
        message.contains("line 3") && message.contains("b.jpg"),
        "{message}"
    );

    let message = load_error("blank.csv", "file,label\na.jpg,x\nb.jpg,\n", true);
    assert!(message.contains("line 3"), "{message}");

    let message = load_error("nopath.csv", "file,label\na.jpg,x\n,y\n", true);
    assert!(
        message.contains("line 3") && message.contains("`file`"),
        "{message}"
    );

    let message = load_error("header_only.tsv", "file\tlabel\n", true);
    assert!(message.contains("no images"), "{message}");
}

#[test]
fn csv_read_as_tsv_reports_the_separator() {
    // A comma-separated file named .tsv has one column named "file,label".
    let message = load_error("wrong.tsv", "file,label\na.jpg,x\n", true);
    assert!(message.contains("tab-separated"), "{message}");
}

/// Builds a class-per-folder dataset with junk files, returning the root.
fn class_folders(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    let tiny = jpeg(&two_colour(8, 8, RED, BLUE), 90, false);
    write(&root, "Oat milk/b.jpg", &tiny);
    write(&root, "Oat milk/a.JPG", &tiny);
    write(&root, "Oat milk/.DS_Store", b"\0\0\0\x01Bud1");
    write(&root, "Oat milk/._a.JPG", b"\0\x05\x16\x07AppleDouble");
    write(&root, "Oat milk/notes.txt", b"bought on Monday");
    write(
        &root,
        "Oat milk/shelf/c.png",
        &png(
            &[0, 0, 0],
            1,
            1,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            None,
        ),
    );
    // An image without an extension is found by its content.
    write(&root, "Crème fraîche/photo", &tiny);
    write(
        &root,
        "Bananas, apples & pears/x.webp",
        &webp(&with_alpha(&two_colour(4, 4, RED, RED), 255)),
    );
    write(&root, ".git/HEAD", b"ref: refs/heads/main\n");
    write(&root, "README.md", b"# photos\n");
    root
}

#[test]
fn class_folders_with_junk_files() {
    let dir = temp();
    let root = class_folders(dir.path());
    let dataset = load(&root, None, true).unwrap();

    let found: Vec<(String, &str)> = dataset
        .samples
        .iter()
        .map(|s| {
            let relative = s
                .path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (relative, s.label.as_deref().unwrap())
        })
        .collect();
    let expected = [
        ("Bananas, apples & pears/x.webp", "Bananas, apples & pears"),
        ("Crème fraîche/photo", "Crème fraîche"),
        ("Oat milk/a.JPG", "Oat milk"),
        ("Oat milk/b.jpg", "Oat milk"),
        ("Oat milk/shelf/c.png", "Oat milk"),
    ];
    let found_refs: Vec<(&str, &str)> = found.iter().map(|(p, l)| (p.as_str(), *l)).collect();
    assert_eq!(found_refs, expected);
    assert_eq!(
        dataset.labels(),
        ["Bananas, apples & pears", "Crème fraîche", "Oat milk"]
    );

    let mut skipped: Vec<(String, SkipReason)> = dataset
        .skipped
        .iter()
        .map(|s| {
            (
                s.path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                s.reason,
            )
        })
        .collect();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    let expected_skips = [
        (".git", SkipReason::Hidden),
        ("Oat milk/.DS_Store", SkipReason::Hidden),
        ("Oat milk/._a.JPG", SkipReason::Hidden),
        ("Oat milk/notes.txt", SkipReason::NotImage),
        ("README.md", SkipReason::OutsideClassFolder),
    ];
    let skipped_refs: Vec<(&str, SkipReason)> =
        skipped.iter().map(|(p, r)| (p.as_str(), *r)).collect();
    assert_eq!(skipped_refs, expected_skips);
}

#[test]
fn folder_without_images_is_an_error() {
    let dir = temp();
    write(dir.path(), "data/empty class/notes.txt", b"nothing here");
    let error = load(&dir.path().join("data"), None, true).unwrap_err();
    assert!(format!("{error:#}").contains("no images"), "{error:#}");
}

#[test]
fn missing_dataset_is_an_error() {
    let dir = temp();
    let path = dir.path().join("nowhere.tsv");
    let error = load(&path, None, true).unwrap_err();
    assert!(
        format!("{error:#}").contains(&path.display().to_string()),
        "{error:#}"
    );
}

#[test]
fn prediction_inputs_expand_in_order() {
    let dir = temp();
    let root = class_folders(dir.path());
    let single = write(dir.path(), "single.gif", b"not really a gif");
    let list = write(dir.path(), "batch.csv", b"file,other\nz.jpg,1\na.jpg,2\n");

    let (inputs, skipped) = collect_inputs(&[single.clone(), root.clone(), list], None).unwrap();
    let mut skipped: Vec<PathBuf> = skipped.into_iter().map(|s| s.path).collect();
    skipped.sort();
    let expected_skips: Vec<PathBuf> = [
        ".git",
        "Oat milk/.DS_Store",
        "Oat milk/._a.JPG",
        "Oat milk/notes.txt",
        "README.md",
    ]
    .iter()
    .map(|name| root.join(name))
    .collect();
    assert_eq!(skipped, expected_skips, "folder entries left out");
    let names: Vec<&str> = inputs.iter().map(|input| input.name.as_str()).collect();
    assert_eq!(
        names[names.len() - 2..],
        ["z.jpg", "a.jpg"],
        "label-file rows keep their names"
    );
    assert_eq!(names[0], single.display().to_string());
    let inputs: Vec<PathBuf> = inputs.into_iter().map(|input| input.path).collect();
    let mut expected = vec![single];
    for name in [
        "Bananas, apples & pears/x.webp",
        "Crème fraîche/photo",
        "Oat milk/a.JPG",
        "Oat milk/b.jpg",
        "Oat milk/shelf/c.png",
    ] {
        expected.push(root.join(name));
    }
    expected.push(dir.path().join("z.jpg"));
    expected.push(dir.path().join("a.jpg"));
    assert_eq!(inputs, expected);

    let missing = dir.path().join("missing.jpg");
    let (inputs, _) = collect_inputs(std::slice::from_ref(&missing), None).unwrap();
    assert_eq!(inputs.len(), 1, "a missing path still yields one input");
    assert_eq!(inputs[0].path, missing);
}

#[test]
fn label_rows_resolve_against_images() {
    let dir = temp();
    let list = write(dir.path(), "batch.tsv", b"file\nz.jpg\nsub/a.jpg\n");
    let images = dir.path().join("photos");

    let (inputs, _) = collect_inputs(std::slice::from_ref(&list), Some(&images)).unwrap();
    let names: Vec<&str> = inputs.iter().map(|input| input.name.as_str()).collect();
    assert_eq!(names, ["z.jpg", "sub/a.jpg"], "rows keep their names");
    let paths: Vec<PathBuf> = inputs.into_iter().map(|input| input.path).collect();
    assert_eq!(paths, [images.join("z.jpg"), images.join("sub/a.jpg")]);
}
