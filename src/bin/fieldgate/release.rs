//! `fieldgate release …`: the offline release tools (docs/updates.md). Keys are made and
//! used on the release engineers' machines; documents are made unsigned, then each key
//! holder adds a signature with `sign` until the threshold is met; `verify` checks what
//! a gateway will check.

use anyhow::{bail, Context};
use clap::Subcommand;
use fieldgate::release::{self, image, Envelope, Install, Role, Root, SigningKey};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand)]
pub enum Command {
    /// Make a signing key: NAME.key (private, mode 0600; keep it offline) and NAME.pub.
    Keygen {
        /// The path without extension.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make the first root (unsigned) from a template naming the keys and thresholds.
    Root {
        /// TOML: expires = "365d"; [root] keys = ["a.pub", …], threshold = N; [release] the same.
        #[arg(long)]
        template: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Make the root that follows `--previous` (unsigned): it must be signed by the
    /// previous root's threshold of root keys and by its own.
    Rotate {
        #[arg(long)]
        previous: PathBuf,
        #[arg(long)]
        template: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Describe an image as a release (unsigned).
    Manifest {
        /// Semantic version, e.g. 1.4.0.
        #[arg(long)]
        version: String,
        /// The hardware compatibility string gateways must match.
        #[arg(long)]
        hardware: String,
        #[arg(long)]
        image: PathBuf,
        #[arg(long, value_enum, default_value = "binary")]
        install: InstallArg,
        /// How long gateways accept it.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// The anti-rollback index: gateways that install it refuse every release with a
        /// lower one from then on. One more than the previous release's, as a rule.
        #[arg(long)]
        rollback_index: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Add this key's signature to each document, in place.
    Sign {
        #[arg(long)]
        key: PathBuf,
        files: Vec<PathBuf>,
    },
    /// Check a release (and its image) as a gateway will.
    Verify {
        /// The root the gateway trusts.
        #[arg(long)]
        root: PathBuf,
        /// Newer roots, in order, if the keys were rotated since.
        #[arg(long)]
        chain: Vec<PathBuf>,
        #[arg(long)]
        release: PathBuf,
        #[arg(long)]
        image: Option<PathBuf>,
        #[arg(long)]
        hardware: String,
        /// The highest version the gateway has installed.
        #[arg(long)]
        installed: Option<semver::Version>,
        /// The gateway's rollback floor.
        #[arg(long, default_value = "0")]
        floor: u64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum InstallArg {
    Binary,
    Rauc,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    #[serde(with = "humantime_serde")]
    expires: Duration,
    root: RoleTemplate,
    release: RoleTemplate,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleTemplate {
    /// Public key files (NAME.pub), relative to the template.
    keys: Vec<PathBuf>,
    threshold: usize,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn now_ns() -> i64 {
    fieldgate::sample::now_ns()
}

fn root_from(template: &Path, version: u64) -> anyhow::Result<Root> {
    let text = String::from_utf8(read(template)?)?;
    let t: Template = toml::from_str(&text)
        .with_context(|| format!("{} is not a root template", template.display()))?;
    let dir = template.parent().unwrap_or(Path::new("."));
    let mut keys = std::collections::BTreeMap::new();
    let mut role = |r: &RoleTemplate| -> anyhow::Result<Role> {
        let mut ids = Vec::new();
        for k in &r.keys {
            let path = dir.join(k);
            let text = String::from_utf8(read(&path)?)?;
            let public = fieldgate::hex::decode(text.trim())
                .filter(|p| p.len() == 32)
                .with_context(|| {
                    format!(
                        "{} is not an Ed25519 public key (64 hex digits)",
                        path.display()
                    )
                })?;
            let id = release::key_id(&public);
            keys.insert(id.clone(), fieldgate::hex::encode(&public));
            ids.push(id);
        }
        Ok(Role {
            keys: ids,
            threshold: r.threshold,
        })
    };
    let (root_role, release_role) = (role(&t.root)?, role(&t.release)?);
    Ok(Root {
        kind: "fieldgate-root".into(),
        v: release::FORMAT,
        version,
        expires_ns: now_ns() + t.expires.as_nanos() as i64,
        keys,
        root: root_role,
        release: release_role,
    })
}

fn say_who_signs(root: &Root, previous: Option<&Root>) {
    if let Some(p) = previous {
        eprintln!(
            "sign it with {} of the previous root keys ({})",
            p.root.threshold,
            p.root.keys.join(", ")
        );
    }
    eprintln!(
        "sign it with {} of its root keys ({})",
        root.root.threshold,
        root.root.keys.join(", ")
    );
}

pub fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Keygen { out } => {
            let pkcs8 = release::generate_key()?;
            let key = SigningKey::from_pkcs8(&pkcs8)?;
            let private = out.with_extension("key");
            if private.exists() {
                bail!("{} exists; not overwriting a key", private.display());
            }
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&private)
                    .and_then(|mut f| f.write_all(&pkcs8))
                    .with_context(|| format!("cannot write {}", private.display()))?;
            }
            write(
                &out.with_extension("pub"),
                format!("{}\n", fieldgate::hex::encode(&key.public())).as_bytes(),
            )?;
            println!("{}", key.id());
            eprintln!(
                "key {} in {} (keep it offline) and {}",
                key.id(),
                private.display(),
                out.with_extension("pub").display()
            );
        }
        Command::Root { template, out } => {
            let root = root_from(&template, 1)?;
            write(&out, &Envelope::of(&root).to_bytes())?;
            say_who_signs(&root, None);
        }
        Command::Rotate {
            previous,
            template,
            out,
        } => {
            let env = Envelope::parse("root", &read(&previous)?)?;
            let prev: Root = serde_json::from_str(&env.signed).context("the previous root")?;
            let root = root_from(&template, prev.version + 1)?;
            write(&out, &Envelope::of(&root).to_bytes())?;
            say_who_signs(&root, Some(&prev));
        }
        Command::Manifest {
            version,
            hardware,
            image,
            install,
            expires,
            rollback_index,
            out,
        } => {
            semver::Version::parse(&version)
                .with_context(|| format!("`{version}` is not a semantic version (1.4.0)"))?;
            let install = match install {
                InstallArg::Binary => Install::Binary,
                InstallArg::Rauc => Install::Rauc,
            };
            let r = release::Release {
                kind: "fieldgate-release".into(),
                v: release::FORMAT,
                version,
                hardware,
                image: image::describe(&read(&image)?, install),
                expires_ns: now_ns() + expires.as_nanos() as i64,
                rollback_index,
            };
            write(&out, &Envelope::of(&r).to_bytes())?;
            eprintln!(
                "release {} for {}: {} bytes, sha256 {}",
                r.version, r.hardware, r.image.length, r.image.sha256
            );
        }
        Command::Sign { key, files } => {
            let key = SigningKey::from_pkcs8(&read(&key)?)?;
            for f in files {
                let mut env = Envelope::parse("document", &read(&f)?)?;
                key.sign(&mut env);
                write(&f, &env.to_bytes())?;
                eprintln!(
                    "{}: signed by {} ({} signatures)",
                    f.display(),
                    key.id(),
                    env.signatures.len()
                );
            }
        }
        Command::Verify {
            root,
            chain,
            release,
            image,
            hardware,
            installed,
            floor,
        } => {
            let trusted = Root::trust_first(&read(&root)?)?;
            let chain = chain
                .iter()
                .map(|p| read(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let newest = trusted.follow(&chain, now_ns())?;
            let r = newest.verify_release(
                &read(&release)?,
                now_ns(),
                &hardware,
                installed.as_ref(),
                floor,
            )?;
            if let Some(path) = image {
                let mut check = image::ImageCheck::new(&r.image);
                let mut f = std::fs::File::open(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    use std::io::Read;
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    check.feed(&buf[..n])?;
                }
                check.finish()?;
            }
            println!(
                "ok: release {} for {} (root version {}){}",
                r.version,
                r.hardware,
                newest.version,
                if chain.is_empty() {
                    ""
                } else {
                    ", through the rotated roots"
                }
            );
        }
    }
    Ok(())
}
