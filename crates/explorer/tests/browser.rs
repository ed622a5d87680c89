//! The explorer in a real browser: Debian's chromium, driven through chromedriver (WebDriver) with
//! fantoccini. Loads the page, picks a target, scrubs t, clicks a start point and an x1, trains a tiny model
//! to the end with the real engine and opens the trained run; checks that the canvases' pixels change, that
//! the page's ln rho along the trajectory matches the closed form computed here from the paths crate, that the
//! mode-seeking panel is plain at lambda = 0 and guided otherwise (closed form and run), that classifier-free
//! guidance is the conditional field at w = 0 and moves samples into the class (closed form and a run trained
//! with classes), that the pushed grid and DDPM's sampler redraw the view, that dragging the start point moves
//! the trajectory with the mouse, that the run's learned
//! density has mass about 1 and its trajectory's ln rho meets the engine's likelihood, and that the page saw no
//! error. Redraw times are measured in the page with `performance.now()` and printed. With
//! `FERROFLOW_EXPLORER_SCREENSHOT=FILE` it saves a screenshot of the page there (the README's
//! `docs/explorer.png` is one, cropped below the classifier-free guidance panel and posterised to 16 levels a
//! channel).
//!
//! Every wait is on a condition with a generous deadline (the machine has two shared cores); a failure saves
//! a screenshot under `CARGO_TARGET_TMPDIR/explorer-browser/`. Without `/usr/bin/chromedriver` the test fails
//! and says to run `cargo xtask setup`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use ferroflow_explorer::views::{T_MAX, mixtures_preset};
use ferroflow_explorer::{ServerConfig, serve};
use ferroflow_paths::{AffinePath, CondOtScheduler, GaussianMixture, MixtureMarginal};
use ndarray::{Array1, Array2, Array3};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(120);

/// Kills chromedriver (and with it the browser) when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("explorer-browser")
}

async fn start_driver() -> (Driver, Client) {
    assert!(
        Path::new(CHROMEDRIVER).is_file() && Path::new(CHROMIUM).is_file(),
        "{CHROMEDRIVER} or {CHROMIUM} is missing: run `cargo xtask setup` (it installs Debian's chromium and \
         chromium-driver); the explorer's browser test cannot run without them"
    );
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let profile = std::env::temp_dir().join(format!("ferroflow-explorer-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,1300",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return (driver, client),
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("cannot open a chromium session through chromedriver: {err}"),
        }
    }
}

async fn js(client: &Client, script: &str) -> Result<Value, String> {
    client
        .execute(script, Vec::new())
        .await
        .map_err(|e| format!("script `{script}` failed: {e}"))
}

/// Waits until `script` (an expression) is truthy in the page.
async fn wait_for(client: &Client, what: &str, script: &str) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = js(client, &format!("return !!({script});")).await?;
        if value == Value::Bool(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let status = js(client, "return document.getElementById('status').textContent + ' | ' + document.getElementById('train-status').textContent + ' | errors: ' + JSON.stringify(window.__explorer.errors);").await?;
            return Err(format!("timed out after {WAIT:?} waiting for {what} ({status})"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A hash of a canvas's pixels.
async fn pixels(client: &Client, id: &str) -> Result<u64, String> {
    let script = format!(
        "const c = document.getElementById('{id}'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
         let h = 2166136261 >>> 0; let ink = 0; for (let k = 0; k < d.length; k += 4) {{ const v = d[k] * 65536 + d[k + 1] * 256 + d[k + 2]; \
         if (v !== 0xffffff) ink++; h = Math.imul(h ^ v, 16777619) >>> 0; }} return [h, ink];"
    );
    let value = js(client, &script).await?;
    let (hash, ink) = (value[0].as_u64().unwrap_or(0), value[1].as_u64().unwrap_or(0));
    if ink == 0 {
        return Err(format!("canvas `{id}` is blank"));
    }
    Ok(hash)
}

async fn click_at(client: &Client, id: &str, dx: f64, dy: f64) -> Result<(), String> {
    let element = client
        .find(Locator::Id(id))
        .await
        .map_err(|e| format!("no #{id}: {e}"))?;
    let actions = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element,
            duration: None,
            x: dx,
            y: dy,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    client
        .perform_actions(actions)
        .await
        .map_err(|e| format!("clicking #{id}: {e}"))
}

/// Presses the mouse at `from` (offsets from the centre of `#id`), moves it to `to` in steps, releases it.
async fn drag(client: &Client, id: &str, from: (f64, f64), to: (f64, f64)) -> Result<(), String> {
    let element = client
        .find(Locator::Id(id))
        .await
        .map_err(|e| format!("no #{id}: {e}"))?;
    let mut actions = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: element.clone(),
            duration: None,
            x: from.0,
            y: from.1,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        });
    for k in 1..=8 {
        let w = f64::from(k) / 8.0;
        actions = actions.then(PointerAction::MoveToElement {
            element: element.clone(),
            duration: Some(Duration::from_millis(60)),
            x: from.0 + w * (to.0 - from.0),
            y: from.1 + w * (to.1 - from.1),
        });
    }
    client
        .perform_actions(actions.then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        }))
        .await
        .map_err(|e| format!("dragging on #{id}: {e}"))
}

/// Clicks the element `#id` (at its centre, as a person would).
async fn click(client: &Client, id: &str) -> Result<(), String> {
    client
        .find(Locator::Id(id))
        .await
        .map_err(|e| format!("no #{id}: {e}"))?
        .click()
        .await
        .map_err(|e| format!("clicking #{id}: {e}"))
}

async fn set_t(client: &Client, t: f64) -> Result<(), String> {
    js(
        client,
        &format!("const s = document.getElementById('t'); s.value = '{t}'; s.dispatchEvent(new Event('input')); return 0;"),
    )
    .await
    .map(|_| ())
}

/// The `mixtures` preset as the paths crate's mixture, built here from the preset's numbers.
fn preset_marginal() -> MixtureMarginal<AffinePath<CondOtScheduler>> {
    let spec = mixtures_preset();
    let total: f64 = spec.weights.iter().sum();
    let n_components = spec.weights.len();
    let mixture = GaussianMixture::new(
        Array1::from_iter(spec.weights.iter().map(|w| w / total)),
        Array2::from_shape_fn((n_components, 2), |(k, axis)| spec.means[k][axis]),
        Array3::from_shape_fn((n_components, 2, 2), |(k, row, col)| {
            spec.covariances[k][row][col]
        }),
    )
    .unwrap();
    MixtureMarginal::new(mixture, AffinePath::new(CondOtScheduler, 0.0).unwrap(), 1.0).unwrap()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn redraw_times(client: &Client, steps: usize) -> Result<Vec<f64>, String> {
    js(client, "window.__explorer.redrawMs = []; return 0;").await?;
    for k in 0..steps {
        set_t(client, (k as f64 + 0.5) / steps as f64).await?;
    }
    let times = js(client, "return window.__explorer.redrawMs;").await?;
    Ok(times
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default())
}

async fn scenario(client: &Client, addr: SocketAddr, runs_dir: &Path) -> Result<(), String> {
    client
        .goto(&format!("http://{addr}/"))
        .await
        .map_err(|e| format!("cannot load the page: {e}"))?;
    wait_for(
        client,
        "the first closed-form views",
        "window.__explorer.flowLoads >= 1",
    )
    .await?;

    // Pick a target with a closed form.
    let target = client
        .find(Locator::Id("target"))
        .await
        .map_err(|e| e.to_string())?;
    target
        .select_by_value("mixtures")
        .await
        .map_err(|e| e.to_string())?;
    wait_for(
        client,
        "the views of the new target",
        "window.__explorer.flowLoads >= 2 && document.getElementById('main-title').textContent.includes('mixtures')",
    )
    .await?;

    // Scrub t: the main view and the conditional views change; measure the redraw.
    set_t(client, 0.0).await?;
    let view_at_0 = pixels(client, "view").await?;
    let marginal_at_0 = pixels(client, "marg").await?;
    set_t(client, 0.8).await?;
    assert_ne_or(
        view_at_0,
        pixels(client, "view").await?,
        "the main view did not change when t moved",
    )?;
    assert_ne_or(
        marginal_at_0,
        pixels(client, "marg").await?,
        "the marginal arrows did not change when t moved",
    )?;
    let mut plain = redraw_times(client, 40).await?;
    js(
        client,
        "document.getElementById('color-div').click(); document.getElementById('show-trajectories').click(); return 0;",
    )
    .await?;
    let mut coloured = redraw_times(client, 40).await?;
    if plain.len() < 40 || coloured.len() < 40 {
        return Err(format!(
            "expected 40 redraws each, saw {} and {}",
            plain.len(),
            coloured.len()
        ));
    }
    let (plain_median, coloured_median) = (median(&mut plain), median(&mut coloured));
    let plain_max = plain.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "explorer redraw (2,000 particles, 40 x 40 arrows, 64 x 64 heat map): median {plain_median:.1} ms, max \
         {plain_max:.1} ms; with particles coloured by div v and 200 trajectories: median {coloured_median:.1} ms"
    );
    // The budget is 50 ms; a loaded two-core machine gets twice that before the test calls it a failure.
    if plain_median > 100.0 {
        return Err(format!(
            "scrubbing t redraws in {plain_median:.1} ms (median), over budget"
        ));
    }

    // Click a start point: the Lagrangian view appears, and the page's ln rho matches the closed form.
    let lnrho_before = pixels(client, "lnrho").await?;
    click_at(client, "view", 52.0, -78.0).await?;
    wait_for(client, "the trajectory", "window.__explorer.trajectory !== null").await?;
    set_t(client, 0.5).await?;
    assert_ne_or(
        lnrho_before,
        pixels(client, "lnrho").await?,
        "the ln rho chart did not change after the click",
    )?;
    let trajectory = js(client, "return window.__explorer.trajectory;").await?;
    let numbers = |key: &str| -> Vec<f64> {
        trajectory[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (times, points, log_density) = (numbers("t"), numbers("points"), numbers("log_density"));
    if times.len() < 50 || points.len() != 2 * times.len() || log_density.len() != times.len() {
        return Err(format!("a malformed trajectory: {trajectory}"));
    }
    // 52 px right and 78 px up of the centre of a 520 px view of [-7, 7]^2.
    let expected_start = [52.0 * 14.0 / 520.0, 78.0 * 14.0 / 520.0];
    if (points[0] - expected_start[0]).abs() > 0.1 || (points[1] - expected_start[1]).abs() > 0.1 {
        return Err(format!(
            "the trajectory starts at {:?}, not near the click {expected_start:?}",
            &points[..2]
        ));
    }
    let marginal = preset_marginal();
    let mut max_error: f64 = 0.0;
    for (k, &t) in times.iter().enumerate() {
        let exact = marginal
            .log_density_at(&points[2 * k..2 * k + 2], t.min(T_MAX))
            .map_err(|e| e.to_string())?;
        max_error = max_error.max((log_density[k] - exact).abs());
    }
    let change = (log_density[0] - log_density[log_density.len() - 1]).abs();
    eprintln!(
        "explorer ln rho along the trajectory: max |page - closed form| = {max_error:.2e} (ln rho changes by {change:.2})"
    );
    if max_error > 1e-3 || change < 0.1 {
        return Err(format!(
            "ln rho along the trajectory: max error {max_error:e}, change {change}"
        ));
    }

    // Click x1 on the conditional view: u_t(x | x1) and the difference change.
    let conditional_before = pixels(client, "cond").await?;
    let difference_before = pixels(client, "diff").await?;
    click_at(client, "cond", -40.0, 30.0).await?;
    assert_ne_or(
        conditional_before,
        pixels(client, "cond").await?,
        "u_t(x | x1) did not change with x1",
    )?;
    assert_ne_or(
        difference_before,
        pixels(client, "diff").await?,
        "u_t - v* did not change with x1",
    )?;

    // The Sinkhorn coupling is drawn beside the independent and OT ones.
    wait_for(client, "the couplings", "window.__explorer.couplings !== null").await?;
    pixels(client, "coupling-sinkhorn").await?;

    // Streamlines instead of arrows.
    let arrows_view = pixels(client, "view").await?;
    click(client, "streamlines").await?;
    wait_for(
        client,
        "streamlines",
        "window.__explorer.streamlineSegments > 100",
    )
    .await?;
    assert_ne_or(
        arrows_view,
        pixels(client, "view").await?,
        "the main view did not change with streamlines",
    )?;
    click(client, "streamlines").await?;

    // Mode seeking: the page computed it at load; lambda = 0 gives the plain samples bit for bit, and
    // Hutchinson's estimator with K = 4 reports its spread and cost.
    wait_for(
        client,
        "the first mode-seeking views",
        "window.__explorer.modeSeeking !== null",
    )
    .await?;
    for id in ["ms-plain", "ms-guided", "ms-divergence", "ms-spread"] {
        pixels(client, id).await?;
    }
    js(
        client,
        "window.__explorer.modeSeeking = null; document.getElementById('ms-lambda').value = '0'; return 0;",
    )
    .await?;
    click(client, "ms-run").await?;
    wait_for(
        client,
        "guidance at lambda = 0",
        "window.__explorer.modeSeeking !== null",
    )
    .await?;
    let guided = js(client, "return window.__explorer.modeSeeking;").await?;
    if guided["identical"] != Value::Bool(true) || guided["plain"] != guided["guided"] {
        return Err("at lambda = 0 the guided samples differ from the plain ones".into());
    }
    let guided_before = pixels(client, "ms-guided").await?;
    js(
        client,
        "window.__explorer.modeSeeking = null; for (const [id, v] of [['ms-lambda', '0.5'], ['ms-estimator', 'hutchinson'], ['ms-probes', '4']]) document.getElementById(id).value = v; return 0;",
    )
    .await?;
    click(client, "ms-run").await?;
    wait_for(
        client,
        "Hutchinson guidance",
        "window.__explorer.modeSeeking !== null",
    )
    .await?;
    let guided = js(client, "return window.__explorer.modeSeeking;").await?;
    if guided["identical"] != Value::Bool(false) {
        return Err("at lambda = 0.5 the guided samples equal the plain ones".into());
    }
    assert_ne_or(
        guided_before,
        pixels(client, "ms-guided").await?,
        "the guided samples did not change with lambda",
    )?;
    let timing = &guided["timing"];
    eprintln!(
        "explorer mode seeking ({} samples, {}): exact {:.2} ms/eval, Hutchinson K=4 {:.2} ms/eval, plain {:.2} ms/eval; spread {}",
        timing["batch"],
        guided["field"],
        timing["exact_eval_ms"].as_f64().unwrap_or(f64::NAN),
        timing["hutchinson_eval_ms"].as_f64().unwrap_or(f64::NAN),
        timing["plain_eval_ms"].as_f64().unwrap_or(f64::NAN),
        guided["spread"]
    );
    let shown = js(client, "return document.getElementById('ms-timing').textContent;").await?;
    if !shown.as_str().unwrap_or_default().contains("Hutchinson K=4") {
        return Err(format!("the page does not show the estimators' cost: {shown}"));
    }

    // Classifier-free guidance on the closed form of the mixtures preset, class 2: at w = 0 the guided
    // samples are the conditional ones; the conditional samples lie in the class by the target's classifier.
    js(
        client,
        "window.__explorer.classifierFree = null; document.getElementById('cfg-class').value = '2'; document.getElementById('cfg-weight').value = '0'; return 0;",
    )
    .await?;
    click(client, "cfg-run").await?;
    wait_for(
        client,
        "classifier-free guidance at w = 0",
        "window.__explorer.classifierFree !== null",
    )
    .await?;
    let cfg = js(client, "return window.__explorer.classifierFree;").await?;
    if cfg["guided"] != cfg["conditional"] || cfg["classes"] != json!(3) {
        return Err(format!(
            "classifier-free guidance at w = 0: classes {}, guided = conditional: {}",
            cfg["classes"],
            cfg["guided"] == cfg["conditional"]
        ));
    }
    let guided_before = pixels(client, "cfg-guided").await?;
    js(
        client,
        "window.__explorer.classifierFree = null; document.getElementById('cfg-weight').value = '3'; return 0;",
    )
    .await?;
    click(client, "cfg-run").await?;
    wait_for(
        client,
        "classifier-free guidance at w = 3",
        "window.__explorer.classifierFree !== null",
    )
    .await?;
    let cfg = js(client, "return window.__explorer.classifierFree;").await?;
    let probability = |k: usize| cfg["class_probability"][k].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "explorer classifier-free guidance, mixtures class 2: p(c | x) unconditional {:.3}, conditional {:.3}, w = 3 {:.3}",
        probability(0),
        probability(1),
        probability(2)
    );
    if !(probability(1) > 0.9 && probability(2) >= probability(1) - 1e-3 && probability(0) < 0.4) {
        return Err(format!(
            "classifier-free guidance's class probabilities: {}",
            cfg["class_probability"]
        ));
    }
    assert_ne_or(
        guided_before,
        pixels(client, "cfg-guided").await?,
        "the guided samples did not change with w",
    )?;
    pixels(client, "cfg-unconditional").await?;
    pixels(client, "cfg-conditional").await?;

    // The pushed-forward grid, then DDPM's ancestral sampler: each asks the server again and redraws.
    let loads = js(client, "return window.__explorer.flowLoads;")
        .await?
        .as_u64()
        .unwrap_or(0);
    set_t(client, 0.6).await?;
    let without_grid = pixels(client, "view").await?;
    click(client, "show-grid").await?;
    wait_for(
        client,
        "the views with the pushed grid",
        &format!("window.__explorer.flowLoads > {loads} && window.__explorer.flow.gridFrames === 51"),
    )
    .await?;
    set_t(client, 0.6).await?;
    assert_ne_or(
        without_grid,
        pixels(client, "view").await?,
        "the pushed grid did not appear",
    )?;
    let with_rk4 = pixels(client, "view").await?;
    js(
        client,
        "const s = document.getElementById('flow-sampler'); s.value = 'ddpm'; s.dispatchEvent(new Event('change')); return 0;",
    )
    .await?;
    wait_for(
        client,
        "DDPM's particles",
        "window.__explorer.flow.sampler === 'ddpm'",
    )
    .await?;
    set_t(client, 0.6).await?;
    assert_ne_or(
        with_rk4,
        pixels(client, "view").await?,
        "DDPM's particles look like the ODE's",
    )?;
    js(
        client,
        "const s = document.getElementById('flow-sampler'); s.value = 'rk4'; s.dispatchEvent(new Event('change')); document.getElementById('show-grid').checked = false; return 0;",
    )
    .await?;
    wait_for(
        client,
        "the ODE's particles again",
        "window.__explorer.flow.sampler === 'rk4'",
    )
    .await?;

    // Dragging the start point: the trajectory follows the mouse to where it is released.
    js(client, "window.__explorer.trajectory = null; return 0;").await?;
    drag(client, "view", (-60.0, 20.0), (70.0, -40.0)).await?;
    wait_for(
        client,
        "the dragged trajectory",
        "window.__explorer.trajectory !== null",
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let dragged = js(client, "return window.__explorer.trajectory.points.slice(0, 2);").await?;
    // 70 px right and 40 px up of the centre on a 520-pixel view of [-7, 7]^2: about (1.9, 1.1).
    let (x, y) = (
        dragged[0].as_f64().unwrap_or(f64::NAN),
        dragged[1].as_f64().unwrap_or(f64::NAN),
    );
    if (x - 70.0 * 14.0 / 520.0).abs() > 0.3 || (y - 40.0 * 14.0 / 520.0).abs() > 0.3 {
        return Err(format!(
            "the dragged trajectory starts at ({x}, {y}), not where the mouse was released"
        ));
    }

    // For the README: the page with the closed-form views and the pushed grid, couplings, mode seeking and
    // classifier-free guidance, when asked for.
    if let Ok(path) = std::env::var("FERROFLOW_EXPLORER_SCREENSHOT") {
        client
            .set_window_size(1400, 2250)
            .await
            .map_err(|e| e.to_string())?;
        let loads = js(client, "return window.__explorer.flowLoads;")
            .await?
            .as_u64()
            .unwrap_or(0);
        click(client, "show-grid").await?;
        wait_for(
            client,
            "the pushed grid",
            &format!("window.__explorer.flowLoads > {loads}"),
        )
        .await?;
        js(client, "window.scrollTo(0, 0); return 0;").await?;
        set_t(client, 0.6).await?;
        let png = client.screenshot().await.map_err(|e| e.to_string())?;
        std::fs::write(&path, png).map_err(|e| format!("{path}: {e}"))?;
        client
            .set_window_size(1400, 1300)
            .await
            .map_err(|e| e.to_string())?;
        let loads = js(client, "return window.__explorer.flowLoads;")
            .await?
            .as_u64()
            .unwrap_or(0);
        click(client, "show-grid").await?;
        wait_for(
            client,
            "the views without the grid",
            &format!("window.__explorer.flowLoads > {loads}"),
        )
        .await?;
    }

    // Train a tiny model to the end with the real engine.
    js(
        client,
        "for (const [id, v] of [['steps', 300], ['width', 32], ['depth', 2], ['batch', 128]]) document.getElementById(id).value = String(v); document.getElementById('conditional').checked = true; return 0;",
    )
    .await?;
    let started = Instant::now();
    click(client, "train").await?;
    wait_for(
        client,
        "training to finish",
        "window.__explorer.train.finished !== null",
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let train = js(client, "return window.__explorer.train;").await?;
    if train["finished"]["completed"] != Value::Bool(true) {
        return Err(format!("training did not complete: {train}"));
    }
    let events = train["progressEvents"].as_f64().unwrap_or(0.0);
    let span = (train["lastAt"].as_f64().unwrap_or(0.0) - train["firstAt"].as_f64().unwrap_or(0.0)) / 1e3;
    eprintln!(
        "explorer training: 300 steps in {seconds:.1} s in the page ({:.1} s in the engine), {events} progress \
         updates, {:.1} updates/s, {} snapshots",
        train["finished"]["seconds"].as_f64().unwrap_or(0.0),
        if span > 0.0 { (events - 1.0) / span } else { 0.0 },
        train["snapshots"]
    );
    if events < 2.0 || train["snapshots"].as_u64().unwrap_or(0) < 1 {
        return Err(format!("too few training updates reached the page: {train}"));
    }
    pixels(client, "snapshot").await?;
    pixels(client, "loss").await?;
    let run = train["finished"]["run"].as_str().unwrap_or_default().to_owned();
    if !runs_dir.join(&run).join("model.safetensors").is_file() {
        return Err(format!(
            "the trained run {run} is not a finished run folder under {}",
            runs_dir.display()
        ));
    }

    // Open the trained run: the learned field replaces the closed form.
    wait_for(
        client,
        "the run to be offered",
        &format!("document.getElementById('run').value === '{run}'"),
    )
    .await?;
    let closed_form_view = pixels(client, "view").await?;
    click(client, "show-run").await?;
    wait_for(
        client,
        "the trained run's views",
        "document.getElementById('main-title').textContent.includes('learned')",
    )
    .await?;
    set_t(client, 1.0).await?;
    assert_ne_or(
        closed_form_view,
        pixels(client, "view").await?,
        "the trained run's view did not replace the closed form",
    )?;
    // The learned rho_t under the run's particles: drawn at every t, and it changes with t.
    wait_for(
        client,
        "the run's learned rho_t",
        "window.__explorer.runDensityFrames !== null",
    )
    .await?;
    let frames = js(client, "return window.__explorer.runDensityFrames.mass;").await?;
    let masses: Vec<f64> = frames
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    eprintln!("explorer learned rho_t of {run}: mass over the window {masses:.3?} at t = 0, 0.1, ..., 1");
    if masses.len() != 11 || masses.iter().any(|m| !(0.8..1.1).contains(m)) {
        return Err(format!("the learned rho_t frames have masses {masses:?}"));
    }
    js(client, "document.getElementById('show-particles').click(); document.getElementById('show-field').click(); return 0;").await?;
    set_t(client, 0.2).await?;
    let density_early = pixels(client, "view").await?;
    set_t(client, 0.9).await?;
    assert_ne_or(
        density_early,
        pixels(client, "view").await?,
        "the learned rho_t did not change with t",
    )?;
    js(client, "document.getElementById('show-particles').click(); document.getElementById('show-field').click(); return 0;").await?;
    // The conditional field u_t(x | x1) beside the learned v_theta and their difference.
    set_t(client, 0.5).await?;
    for id in ["cond", "marg", "diff"] {
        pixels(client, id).await?;
    }

    // The learned density of the run: its mass over the window is about 1.
    click(client, "run-density").await?;
    wait_for(
        client,
        "the learned density",
        "window.__explorer.runDensity !== null",
    )
    .await?;
    let density = js(client, "return window.__explorer.runDensity;").await?;
    let mass = density["mass"].as_f64().unwrap_or(f64::NAN);
    eprintln!("explorer learned density of {run}: mass {mass:.3} over the window");
    if !(0.85..1.1).contains(&mass) {
        return Err(format!("the learned density has mass {mass} over the window"));
    }
    pixels(client, "run-density-view").await?;

    // A trajectory of the run with ln rho: its end meets the engine's backward likelihood.
    js(client, "window.__explorer.trajectory = null; return 0;").await?;
    click_at(client, "view", -30.0, 40.0).await?;
    wait_for(
        client,
        "the run's trajectory",
        "window.__explorer.trajectory !== null && window.__explorer.trajectory.log_density_backward !== undefined",
    )
    .await?;
    let trajectory = js(client, "return window.__explorer.trajectory;").await?;
    let forward = trajectory["log_density"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    let backward = trajectory["log_density_backward"].as_f64().unwrap_or(f64::NAN);
    if (forward - backward).abs() > 2e-2 {
        return Err(format!(
            "ln p at the end of the run's trajectory: forward {forward}, backward {backward}"
        ));
    }

    // Mode seeking of the trained run.
    js(client, "window.__explorer.modeSeeking = null; return 0;").await?;
    click(client, "ms-run").await?;
    wait_for(
        client,
        "the run's mode seeking",
        "window.__explorer.modeSeeking !== null",
    )
    .await?;
    let guided = js(client, "return window.__explorer.modeSeeking;").await?;
    if guided["field"] != Value::String(format!("run {run}")) {
        return Err(format!("mode seeking did not use the run: {}", guided["field"]));
    }

    // Classifier-free guidance of the trained run (trained with classes): the class's samples gain weight.
    js(client, "window.__explorer.classifierFree = null; document.getElementById('cfg-weight').value = '2'; return 0;").await?;
    click(client, "cfg-run").await?;
    wait_for(
        client,
        "the run's classifier-free guidance",
        "window.__explorer.classifierFree !== null",
    )
    .await?;
    let cfg = js(client, "return window.__explorer.classifierFree;").await?;
    let probability = |k: usize| cfg["class_probability"][k].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "explorer classifier-free guidance of run {run}, class 2: p(c | x) unconditional {:.3}, conditional {:.3}, w = 2 {:.3}",
        probability(0),
        probability(1),
        probability(2)
    );
    if cfg["field"] != Value::String(format!("run {run}"))
        || probability(1).partial_cmp(&probability(0)) != Some(std::cmp::Ordering::Greater)
    {
        return Err(format!(
            "the run's classifier-free guidance: {} {}",
            cfg["field"], cfg["class_probability"]
        ));
    }

    let errors = js(client, "return window.__explorer.errors;").await?;
    if errors.as_array().is_none_or(|e| !e.is_empty()) {
        return Err(format!("the page reported errors: {errors}"));
    }
    save_screenshot(client, "final").await;
    Ok(())
}

fn assert_ne_or(before: u64, after: u64, message: &str) -> Result<(), String> {
    if before == after {
        return Err(message.to_owned());
    }
    Ok(())
}

async fn save_screenshot(client: &Client, name: &str) -> Option<PathBuf> {
    let png = client.screenshot().await.ok()?;
    std::fs::create_dir_all(screenshot_dir()).ok()?;
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).ok()?;
    Some(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_works_in_a_real_browser() {
    let runs_dir =
        std::env::temp_dir().join(format!("ferroflow-explorer-browser-runs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runs_dir);
    std::fs::create_dir_all(&runs_dir).unwrap();
    let (bound, ready) = tokio::sync::oneshot::channel();
    let config = ServerConfig {
        runs_dir: runs_dir.clone(),
        initial_run: None,
    };
    tokio::spawn(async move {
        serve(config, "127.0.0.1:0".parse().unwrap(), |addr| {
            let _ = bound.send(addr);
        })
        .await
        .unwrap();
    });
    let addr = ready.await.unwrap();
    let (driver, client) = start_driver().await;
    let result = scenario(&client, addr, &runs_dir).await;
    if let Err(message) = &result {
        let shot = save_screenshot(&client, "failure").await;
        let _ = client.close().await;
        drop(driver);
        panic!("{message}\nscreenshot: {shot:?}");
    }
    let _ = client.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&runs_dir);
}
