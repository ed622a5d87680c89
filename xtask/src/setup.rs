//! Idempotent set-up: the Debian packages the build needs, libtorch 2.13.0 from the PyTorch wheel, and
//! data sets from Debian packages.
//!
//! libtorch cannot be downloaded as a zip here; the wheel on the Python package registry carries a complete
//! libtorch (`torch/include`, `torch/lib`). It is installed with `pip --target` into `.libtorch.partial`,
//! checked, marked with a `READY` file, and only then renamed to `.libtorch`, so an interrupted install never
//! leaves a folder that a later build mistakes for a good one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// The libtorch version tch 0.26 is built against.
pub const TORCH_VERSION: &str = "2.13.0";
/// Debian packages the build and runs need: OpenBLAS for ndarray-linalg, pkg-config to find it, wamerican
/// for the word list of discrete `words` runs (`/usr/share/dict/american-english`), Open MPI for
/// data-parallel training (`mpirun`, the headers and libmpi the `mpi` crate links, and libclang for its
/// bindgen), and `chromium` with `chromium-driver` for the explorer's browser test (WebDriver at
/// /usr/bin/chromedriver).
const DEBIAN_PACKAGES: &[&str] = &[
    "libopenblas-dev",
    "pkg-config",
    "wamerican",
    "openmpi-bin",
    "libopenmpi-dev",
    "libclang-dev",
    "chromium",
    "chromium-driver",
];
const FASHION_MNIST_PACKAGE: &str = "dataset-fashion-mnist";
const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Which libtorch to install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// CPU only: libtorch plus the two CUDA runtime libraries its CPU library links against (~1.25 GB).
    Cpu,
    /// The full CUDA set (cuBLAS, cuDNN, ...), ~4.7 GB; only needed on a GPU machine.
    Cuda,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Cpu => "cpu",
            Mode::Cuda => "cuda",
        }
    }

    /// Disk space the install needs while it runs: the unpacked files plus the downloaded wheels and pip's
    /// unpacking copy (measured: 1.2 GB installed from a ~0.2 GB CPU wheel; the CUDA set is ~4.7 GB).
    fn space_needed(self) -> u64 {
        match self {
            Mode::Cpu => 3 << 30,
            Mode::Cuda => 10 << 30,
        }
    }

    fn pip_packages(self) -> Vec<String> {
        let torch = format!("torch=={TORCH_VERSION}");
        match self {
            Mode::Cpu => vec![
                "--no-deps".to_owned(),
                torch,
                "nvidia-cuda-runtime==13.0.96".to_owned(),
                "nvidia-cuda-cupti==13.0.85".to_owned(),
            ],
            Mode::Cuda => vec![torch],
        }
    }
}

/// Runs the set-up only when something is missing; used before every task that builds tch code.
pub fn ensure(root: &Path) -> Result<()> {
    if missing_packages()?.is_empty() && installed_libtorch(root).is_some() {
        return Ok(());
    }
    setup(root, Mode::Cpu)
}

/// Installs what is missing and says in one line what was done.
pub fn setup(root: &Path, mode: Mode) -> Result<()> {
    let mut done = Vec::new();
    let missing = missing_packages()?;
    if !missing.is_empty() {
        apt_install(&missing)?;
        done.push(format!("installed {}", missing.join(", ")));
    }
    match installed_libtorch(root) {
        Some(installed) if installed == mode.name() || installed == Mode::Cuda.name() => {}
        _ => {
            install_libtorch(root, mode)?;
            done.push(format!(
                "installed libtorch {TORCH_VERSION} ({}) into .libtorch",
                mode.name()
            ));
        }
    }
    if done.is_empty() {
        println!(
            "setup: nothing to do (libtorch {TORCH_VERSION} in .libtorch, {} present)",
            DEBIAN_PACKAGES.join(", ")
        );
    } else {
        println!("setup: {}", done.join("; "));
    }
    Ok(())
}

/// The mode recorded in `.libtorch/READY`, if a checked install is there.
fn installed_libtorch(root: &Path) -> Option<String> {
    let marker = fs::read_to_string(root.join(".libtorch/READY")).ok()?;
    let mut fields = marker.split_whitespace();
    (fields.next()? == TORCH_VERSION).then(|| fields.next().unwrap_or("cpu").to_owned())
}

fn install_libtorch(root: &Path, mode: Mode) -> Result<()> {
    let partial = root.join(".libtorch.partial");
    let target = root.join(".libtorch");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("cannot remove {}", partial.display()))?;
    }
    // A full disk makes pip fail half-way with a message about errno 28; say what is needed before starting.
    let free = free_space(root)?;
    ensure!(
        free >= mode.space_needed(),
        "not enough disk space to install libtorch {TORCH_VERSION} ({}): {} free in {}, the install needs \
         about {}; free some space and run `cargo xtask setup` again",
        mode.name(),
        gib(free),
        root.display(),
        gib(mode.space_needed())
    );
    println!(
        "setup: installing libtorch {TORCH_VERSION} ({}) from the PyTorch wheel; this takes {} ...",
        mode.name(),
        if mode == Mode::Cpu {
            "about 30 s"
        } else {
            "a few minutes"
        }
    );
    pip_install(root, &partial, ".libtorch.tmp", &mode.pip_packages()).with_context(|| {
        format!(
            "pip could not install torch=={TORCH_VERSION}; nothing was kept, run `cargo xtask setup` again \
             once that is mended"
        )
    })?;
    if let Err(err) = check_libtorch(&partial.join("torch")) {
        let _ = fs::remove_dir_all(&partial);
        return Err(err.context("the installed wheel is not a usable libtorch; nothing was kept"));
    }
    fs::write(
        partial.join("READY"),
        format!("{TORCH_VERSION} {}\n", mode.name()),
    )?;
    if target.exists() {
        fs::remove_dir_all(&target).with_context(|| format!("cannot remove {}", target.display()))?;
    }
    fs::rename(&partial, &target)
        .with_context(|| format!("cannot move {} to {}", partial.display(), target.display()))?;
    Ok(())
}

/// `pip install --target partial PACKAGES` with its temporary files in `root/tmp_name` (the disk that was
/// checked), removed whatever happens, and no cache: a second copy of a wheel is only dead weight on disk. On
/// failure `partial` is removed too.
fn pip_install(root: &Path, partial: &Path, tmp_name: &str, packages: &[String]) -> Result<()> {
    let python = find_python()?;
    let pip_tmp = root.join(tmp_name);
    let _ = fs::remove_dir_all(&pip_tmp);
    fs::create_dir_all(&pip_tmp).with_context(|| format!("cannot create {}", pip_tmp.display()))?;
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-warn-script-location",
        ])
        .arg("--target")
        .arg(partial)
        .args(packages)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .env("TMPDIR", &pip_tmp)
        .status()
        .with_context(|| format!("cannot run `{python} -m pip`"));
    let _ = fs::remove_dir_all(&pip_tmp);
    let status = status?;
    if !status.success() {
        let _ = fs::remove_dir_all(partial);
        bail!(
            "`pip install {}` failed ({status}); pip's message above says why (an unreachable package \
             registry, a full disk: {} free now in {})",
            packages.join(" "),
            free_space(root).map_or_else(|_| "unknown".to_owned(), gib),
            root.display()
        );
    }
    Ok(())
}

/// The peers' packages, pinned to the versions whose figures `shared/reference.md` quotes. torch comes with its
/// full CUDA dependency set: the wheel on the package registry does not import without cuDNN, even on a CPU.
const PEER_PACKAGES: &[&str] = &["flow_matching==1.0.10", "torchcfm==1.0.7"];

/// Where the peers are installed, and the interpreter script that runs Python with them.
pub const PEERS_DIR: &str = ".peers";

/// Installs Python's flow-matching peers (Meta's `flow_matching`, `torchcfm`, with torch and POT) into
/// `.peers`, for the benchmarks that run them side by side (`--peer-python .peers/python`); nothing else
/// uses them. Same transaction as libtorch: `.peers.partial`, an import check, a `READY` marker, a rename.
pub fn peers(root: &Path) -> Result<PathBuf> {
    let target = root.join(PEERS_DIR);
    let python_script = target.join("python");
    let wanted = peers_marker();
    if fs::read_to_string(target.join("READY")).is_ok_and(|m| m == wanted) && python_script.is_file() {
        println!("setup: peers already in {} ({})", target.display(), wanted.trim());
        return Ok(python_script);
    }
    let partial = root.join(".peers.partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("cannot remove {}", partial.display()))?;
    }
    let needed = Mode::Cuda.space_needed();
    let free = free_space(root)?;
    ensure!(
        free >= needed,
        "not enough disk space to install the peers: {} free in {}, the install needs about {}",
        gib(free),
        root.display(),
        gib(needed)
    );
    println!(
        "setup: installing the peers ({}) into {}; this takes a few minutes ...",
        wanted.trim(),
        target.display()
    );
    let mut packages = vec![format!("torch=={TORCH_VERSION}")];
    packages.extend(PEER_PACKAGES.iter().map(|p| (*p).to_owned()));
    pip_install(root, &partial, ".peers.tmp", &packages)
        .context("the peers could not be installed; nothing was kept")?;
    // The interpreter script: the machine's Python with the peers first on its path.
    let script = format!(
        "#!/bin/sh\n# Python with the peers of `cargo xtask setup --peers`.\nPYTHONPATH=\"$(dirname \"$0\")${{PYTHONPATH:+:$PYTHONPATH}}\" exec {} \"$@\"\n",
        find_python()?
    );
    let script_path = partial.join("python");
    fs::write(&script_path, script).with_context(|| format!("cannot write {}", script_path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script_path, fs::Permissions::from_mode(0o755))?;
    let check = Command::new(&script_path)
        .args([
            "-c",
            "import torch, flow_matching, torchcfm, ot; print(torch.__version__)",
        ])
        .output()
        .with_context(|| format!("cannot run {}", script_path.display()));
    let imported = check.as_ref().is_ok_and(|o| o.status.success());
    if !imported {
        let why = match &check {
            Ok(o) => String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .to_owned(),
            Err(err) => format!("{err:#}"),
        };
        let _ = fs::remove_dir_all(&partial);
        bail!("the installed peers do not import ({why}); nothing was kept");
    }
    fs::write(partial.join("READY"), &wanted)?;
    if target.exists() {
        fs::remove_dir_all(&target).with_context(|| format!("cannot remove {}", target.display()))?;
    }
    fs::rename(&partial, &target)
        .with_context(|| format!("cannot move {} to {}", partial.display(), target.display()))?;
    println!("setup: peers installed in {}", target.display());
    Ok(target.join("python"))
}

/// What `.peers/READY` says when the pinned set is installed.
fn peers_marker() -> String {
    format!("torch=={TORCH_VERSION} {}\n", PEER_PACKAGES.join(" "))
}

/// Bytes available to this user on the file system holding `dir`, as `df` reports them (POSIX output format,
/// 1024-byte blocks), so xtask needs no binding to statvfs.
fn free_space(dir: &Path) -> Result<u64> {
    let output = Command::new("df")
        .args(["-P", "-k"])
        .arg(dir)
        .output()
        .context("cannot run df to measure the free disk space")?;
    ensure!(
        output.status.success(),
        "df {} failed ({})",
        dir.display(),
        output.status
    );
    parse_df_available(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("cannot read the free space of {} from df's output", dir.display()))
}

/// The "Available" column (in KiB) of `df -P -k`'s single data line, in bytes.
fn parse_df_available(text: &str) -> Result<u64> {
    let line = text.lines().nth(1).context("df printed no data line")?;
    let field = line
        .split_whitespace()
        .nth(3)
        .with_context(|| format!("df's line has no Available column: {line:?}"))?;
    let kib: u64 = field
        .parse()
        .with_context(|| format!("df's Available column is not a number: {field:?}"))?;
    Ok(kib * 1024)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Checks the files torch-sys and the linker need, and the wheel's version.
fn check_libtorch(torch: &Path) -> Result<()> {
    for file in [
        "lib/libtorch_cpu.so",
        "lib/libtorch.so",
        "lib/libc10.so",
        "include/torch/csrc/api/include/torch/torch.h",
    ] {
        ensure!(
            torch.join(file).is_file(),
            "{} is missing",
            torch.join(file).display()
        );
    }
    let version_file = torch.join("version.py");
    let version = fs::read_to_string(&version_file)
        .with_context(|| format!("cannot read {}", version_file.display()))?;
    ensure!(
        version.contains(&format!("__version__ = '{TORCH_VERSION}")),
        "{} does not say version {TORCH_VERSION}",
        version_file.display()
    );
    Ok(())
}

fn find_python() -> Result<String> {
    for candidate in ["python3", "python"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(candidate.to_owned());
        }
    }
    bail!("no python3 found: libtorch is installed from the PyTorch wheel with pip; install python3 and pip")
}

fn missing_packages() -> Result<Vec<String>> {
    Ok(DEBIAN_PACKAGES
        .iter()
        .filter(|p| !package_installed(p))
        .map(|p| (*p).to_owned())
        .collect())
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_install(packages: &[String]) -> Result<()> {
    println!("setup: installing Debian packages {} ...", packages.join(", "));
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get (is this Debian?)")?;
        ensure!(
            status.success(),
            "`apt-get {}` failed ({status}); run it as root, or install {} by hand",
            args.join(" "),
            packages.join(", ")
        );
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(packages.iter().map(String::as_str));
    apt(&args)
}

/// The four Fashion-MNIST files: (name, IDX magic number, item count).
const FASHION_MNIST_FILES: [(&str, u32, u32); 4] = [
    ("train-images-idx3-ubyte", 0x0803, 60_000),
    ("train-labels-idx1-ubyte", 0x0801, 60_000),
    ("t10k-images-idx3-ubyte", 0x0803, 10_000),
    ("t10k-labels-idx1-ubyte", 0x0801, 10_000),
];

/// Installs Debian's Fashion-MNIST package when missing and un-gzips it into `data/fashion-mnist`,
/// checking each file's magic number, item count and length before it is used.
pub fn fashion_mnist(root: &Path) -> Result<PathBuf> {
    let out_dir = root.join("data/fashion-mnist");
    if FASHION_MNIST_FILES
        .iter()
        .all(|(name, magic, count)| check_idx(&out_dir.join(name), *magic, *count).is_ok())
    {
        println!("data: fashion-mnist already prepared in {}", out_dir.display());
        return Ok(out_dir);
    }
    if !package_installed(FASHION_MNIST_PACKAGE) {
        apt_install(&[FASHION_MNIST_PACKAGE.to_owned()])?;
    }
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    for (name, magic, count) in FASHION_MNIST_FILES {
        let source = Path::new(FASHION_MNIST_DIR).join(format!("{name}.gz"));
        ensure!(
            source.is_file(),
            "{} is missing although {FASHION_MNIST_PACKAGE} is installed",
            source.display()
        );
        let output = Command::new("gzip")
            .arg("-dc")
            .arg(&source)
            .output()
            .with_context(|| format!("cannot run gzip on {}", source.display()))?;
        ensure!(
            output.status.success(),
            "gzip could not decompress {}",
            source.display()
        );
        // Write beside the final name, then rename: a half-written file never carries the real name.
        let dest = out_dir.join(name);
        let tmp = out_dir.join(format!("{name}.partial"));
        fs::write(&tmp, &output.stdout).with_context(|| format!("cannot write {}", tmp.display()))?;
        check_idx(&tmp, magic, count)
            .with_context(|| format!("{} is not a valid IDX file", source.display()))?;
        fs::rename(&tmp, &dest)?;
    }
    println!("data: fashion-mnist prepared in {}", out_dir.display());
    Ok(out_dir)
}

/// Checks an IDX file's magic number, item count and total length.
fn check_idx(path: &Path, magic: u32, count: u32) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(bytes.len() >= 8, "{} is too short", path.display());
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    ensure!(
        word(0) == magic,
        "{}: magic {:#x}, expected {magic:#x}",
        path.display(),
        word(0)
    );
    ensure!(
        word(4) == count,
        "{}: {} items, expected {count}",
        path.display(),
        word(4)
    );
    let dims = (magic & 0xff) as usize;
    let header = 4 + 4 * dims;
    ensure!(
        bytes.len() >= header,
        "{} is too short for its header",
        path.display()
    );
    let item_size: usize = (1..dims).map(|d| word(4 + 4 * d) as usize).product();
    let expected = header + count as usize * item_size;
    ensure!(
        bytes.len() == expected,
        "{}: {} bytes, expected {expected}",
        path.display(),
        bytes.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_available_column_is_read_in_bytes() {
        let text = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                    /dev/vda        264091588 95120044 486400      100% /\n";
        assert_eq!(parse_df_available(text).unwrap(), 486_400 * 1024);
    }

    #[test]
    fn df_output_without_a_number_is_refused_with_the_field() {
        let err =
            parse_df_available("Filesystem 1024-blocks Used Available\n/dev/vda 1 2 lots 3 /\n").unwrap_err();
        assert!(format!("{err:#}").contains("\"lots\""), "{err:#}");
        assert!(parse_df_available("Filesystem only a header\n").is_err());
    }

    #[test]
    fn the_free_space_of_this_folder_is_measured() {
        // The real df on the real file system: a positive number of bytes, and a multiple of a KiB.
        let free = free_space(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(free > 0 && free.is_multiple_of(1024));
    }
}
