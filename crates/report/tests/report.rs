//! Report tests: a tiny "Gaussian to ring" run gets every picture, each a decodable PNG or animated GIF of
//! the documented pixel size and not one flat colour, and a `report.md` that embeds each picture and shows
//! the metrics; a 3-D run gets its loss curve and a page saying what was skipped; no temporary file is left
//! behind, even when drawing fails.

use std::path::{Path, PathBuf};

use ferroflow_engine::RunConfig;
use ferroflow_engine::metrics::RunMetrics;
use ferroflow_report::plot::{
    self, COLOUR_BAR_WIDTH, GIF_SIZE, LOSS_SIZE, PANEL_SIZE, SQUARE_SIZE, TITLE_HEIGHT,
};
use ferroflow_report::run_report::{FIELD_TIMES, GIF_STEPS, REPORT_FILE, write_report};
use tch::Kind;

/// A fresh, empty folder under the system's temporary folder.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Trains a tiny run (`target` and `source` are TOML inline tables) into `out_dir` and returns its folder.
fn tiny_run(out_dir: &Path, source: &str, target: &str) -> PathBuf {
    let text = format!(
        r#"
[run]
name = "tiny"
out_dir = "{}"
seed = 5
threads = 1

[data]
source = {source}
target = {target}

[model]
width = 16
depth = 2

[train]
steps = 100
batch_size = 64
checkpoint_every = 0
log_every = 10

[sample]
n_samples = 200
solver = "euler"
steps = 20
w2_samples = 200
"#,
        out_dir.display()
    );
    let config = RunConfig::parse(&text, Path::new("<test>")).unwrap();
    let run_dir = ferroflow_engine::run::train_new(&config, &mut [], None).unwrap();
    ferroflow_report::write_samples_picture(&run_dir).unwrap();
    run_dir
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG"
    );
    assert_eq!(&bytes[12..16], b"IHDR", "the first chunk of a PNG is IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Width, height and number of frames of a GIF, walking its blocks.
fn gif_size_and_frames(bytes: &[u8]) -> (u32, u32, usize) {
    assert!(bytes.starts_with(b"GIF89a"), "not a GIF89a");
    let le = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as u32;
    let (width, height) = (le(6), le(8));
    let table_size = |flags: u8| {
        if flags & 0x80 != 0 {
            3 << ((flags & 7) + 1)
        } else {
            0
        }
    };
    let mut at = 13 + table_size(bytes[10]);
    let skip_sub_blocks = |mut at: usize| {
        while bytes[at] != 0 {
            at += bytes[at] as usize + 1;
        }
        at + 1
    };
    let mut frames = 0;
    loop {
        match bytes[at] {
            0x21 => at = skip_sub_blocks(at + 2),
            0x2C => {
                frames += 1;
                at = skip_sub_blocks(at + 10 + table_size(bytes[at + 9]) + 1);
            }
            0x3B => break,
            other => panic!("unexpected GIF block 0x{other:02x} at byte {at}"),
        }
    }
    (width, height, frames)
}

/// Decodes a picture (the first frame of a GIF) and checks it is not one flat colour: a fair share of
/// non-white pixels and some spread of values.
fn assert_not_flat(path: &Path) {
    let image = tch::vision::image::load(path).unwrap().to_kind(Kind::Float);
    let non_white = image
        .lt(250.0)
        .any_dim(0, false)
        .to_kind(Kind::Float)
        .mean(Kind::Float);
    let non_white = non_white.double_value(&[]);
    let spread = image.std(true).double_value(&[]);
    assert!(
        non_white > 0.02 && spread > 10.0,
        "{} looks flat: {:.3} of pixels not white, value std {spread:.1}",
        path.display(),
        non_white
    );
}

/// The names of the files in `dir`.
fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_ring_run_gets_every_picture_and_a_page() {
    let out_dir = temp_dir("ring");
    let run_dir = tiny_run(&out_dir, r#"{ kind = "gaussian" }"#, r#"{ kind = "ring" }"#);
    let metrics = ferroflow_engine::run::evaluate(&run_dir).unwrap();
    let written = write_report(&run_dir).unwrap();

    let panels = |n: u32| (PANEL_SIZE.0 * n + COLOUR_BAR_WIDTH, PANEL_SIZE.1 + TITLE_HEIGHT);
    let pictures = [
        ("samples.png", SQUARE_SIZE),
        ("trajectories.png", SQUARE_SIZE),
        ("velocity.png", panels(FIELD_TIMES.len() as u32)),
        ("density.png", (SQUARE_SIZE.0 + COLOUR_BAR_WIDTH, SQUARE_SIZE.1)),
        ("flow.gif", GIF_SIZE),
        ("conditional_vs_marginal.png", panels(2)),
        ("loss.png", LOSS_SIZE),
    ];
    let mut expected: Vec<PathBuf> = pictures.iter().map(|(f, _)| run_dir.join(f)).collect();
    expected.push(run_dir.join(REPORT_FILE));
    let mut got = written.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);

    for (file, size) in pictures {
        let path = run_dir.join(file);
        let bytes = std::fs::read(&path).unwrap();
        if file.ends_with(".gif") {
            let (width, height, frames) = gif_size_and_frames(&bytes);
            assert_eq!((width, height), size, "{file}");
            assert!(frames > GIF_STEPS, "{file} has {frames} frames");
        } else {
            assert_eq!(png_size(&bytes), size, "{file}");
        }
        assert_not_flat(&path);
    }

    let page = std::fs::read_to_string(run_dir.join(REPORT_FILE)).unwrap();
    for (file, _) in pictures {
        assert!(
            page.contains(&format!("]({file})")),
            "report.md does not embed {file}"
        );
    }
    let w2 = metrics.w2.unwrap();
    assert!(
        page.contains(&format!("| {} |", plot::short_number(w2))),
        "W2 {w2} missing:\n{page}"
    );
    let all = RunMetrics::read(&run_dir).unwrap();
    let final_loss = all.final_loss.unwrap();
    assert!(
        page.contains(&format!(
            "| final training loss | {} |",
            plot::short_number(final_loss)
        )),
        "{page}"
    );
    assert!(page.contains("training speed (steps/s)") && page.contains("`data.target` | kind = ring"));
    assert!(!page.contains("## Skipped"), "{page}");

    assert!(
        file_names(&run_dir).iter().all(|name| !name.contains(".tmp-")),
        "temporary files left: {:?}",
        file_names(&run_dir)
    );
    std::fs::remove_dir_all(&out_dir).unwrap();
}

#[test]
fn a_product_manifold_run_gets_a_panel_per_factor_and_its_trajectories() {
    let out_dir = temp_dir("product");
    let text = format!(
        r#"
[run]
name = "tiny-product"
out_dir = "{}"
seed = 5
threads = 1

[data]
manifold = {{ kind = "product", factors = [{{ kind = "sphere", dim = 3 }}, {{ kind = "torus", dim = 1 }}] }}
target = {{ kind = "product", factors = [{{ kind = "vmf_mixture", weights = [1.0], means = [[0.0, 0.0, 1.0]], concentrations = [8.0] }}, {{ kind = "wrapped_gaussian_mixture", weights = [1.0], means = [[3.0]], stds = [[0.4]] }}] }}

[model]
width = 16
depth = 2

[train]
steps = 60
batch_size = 64
checkpoint_every = 0

[sample]
n_samples = 200
solver = "euler"
steps = 10
w2_samples = 100
"#,
        out_dir.display()
    );
    let config = RunConfig::parse(&text, Path::new("<test>")).unwrap();
    let run_dir = ferroflow_engine::run::train_new(&config, &mut [], None).unwrap();
    ferroflow_report::write_samples_picture(&run_dir).unwrap();
    let written = write_report(&run_dir).unwrap();
    assert!(written.contains(&run_dir.join("trajectories.png")), "{written:?}");
    // Two panels: the S^2 factor's equal-area map and the circle against the sphere's height.
    let samples = std::fs::read(run_dir.join("samples.png")).unwrap();
    assert_eq!(png_size(&samples), (2 * SQUARE_SIZE.0, SQUARE_SIZE.1));
    for file in ["samples.png", "trajectories.png"] {
        assert_not_flat(&run_dir.join(file));
    }
    let page = std::fs::read_to_string(run_dir.join(REPORT_FILE)).unwrap();
    assert!(page.contains("](trajectories.png)"), "{page}");
    assert!(
        page.contains("- `velocity.png`: the run lives on S^2 x T^1"),
        "{page}"
    );
    std::fs::remove_dir_all(&out_dir).unwrap();
}

#[test]
fn a_three_dimensional_run_gets_its_loss_and_says_what_was_skipped() {
    let out_dir = temp_dir("3d");
    let run_dir = tiny_run(
        &out_dir,
        r#"{ kind = "gaussian", dim = 3 }"#,
        r#"{ kind = "gaussian", dim = 3, std = 0.5 }"#,
    );
    let written = write_report(&run_dir).unwrap();
    assert_eq!(written, vec![run_dir.join("loss.png"), run_dir.join(REPORT_FILE)]);
    let page = std::fs::read_to_string(run_dir.join(REPORT_FILE)).unwrap();
    assert!(page.contains("## Skipped"), "{page}");
    for file in ["trajectories.png", "velocity.png", "density.png", "flow.gif"] {
        assert!(
            page.contains(&format!("- `{file}`: the run's points have 3 dimensions")),
            "{page}"
        );
        assert!(!run_dir.join(file).exists());
    }
    assert!(
        page.contains("](loss.png)") && page.contains("not measured yet"),
        "{page}"
    );
    std::fs::remove_dir_all(&out_dir).unwrap();
}

#[test]
fn a_failed_drawing_leaves_no_file() {
    let dir = temp_dir("failed");
    let err = plot::loss_png(&dir.join("loss.png"), "nothing", &[(1.0, f64::NAN)]).unwrap_err();
    assert!(err.to_string().contains("no finite loss"), "{err}");
    let err = plot::loss_png(&dir.join("loss.jpg"), "wrong name", &[(1.0, 2.0)]).unwrap_err();
    assert!(err.to_string().contains(".png"), "{err}");
    // A folder where the picture should go makes the rename fail after drawing.
    std::fs::create_dir(dir.join("taken.png")).unwrap();
    std::fs::write(dir.join("taken.png").join("x"), b"x").unwrap();
    assert!(plot::loss_png(&dir.join("taken.png"), "taken", &[(1.0, 2.0), (2.0, 1.0)]).is_err());
    assert_eq!(file_names(&dir), vec!["taken.png".to_string()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_image_grid_is_written_as_a_png_of_its_size_and_a_missing_folder_is_an_error() {
    let images =
        tch::Tensor::linspace(-1.0, 1.0, 5 * 784, (Kind::Float, tch::Device::Cpu)).view([5, 1, 28, 28]);
    let grid = ferroflow_engine::images::image_grid(&images, 3).unwrap();
    let dir = temp_dir("grid");
    let path = dir.join("grid.png");
    plot::rgb_png(&path, grid.width, grid.height, &grid.rgb).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(png_size(&bytes), (grid.width as u32, grid.height as u32));
    assert_not_flat(&path);
    let no_dir = dir.join("missing").join("grid.png");
    let err = plot::rgb_png(&no_dir, grid.width, grid.height, &grid.rgb).unwrap_err();
    assert!(format!("{err:#}").contains("grid.png"), "{err:#}");
    assert!(plot::rgb_png(&path, grid.width, grid.height, &grid.rgb[1..]).is_err());
    assert_eq!(
        file_names(&dir),
        vec!["grid.png".to_owned()],
        "no temporary file is left"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
