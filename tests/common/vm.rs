//! Re-running a test inside the rig VM.

use super::*;

/// Whether this test process runs inside the rig VM (`hil/can-vm.sh` sets it).
pub fn in_vm() -> bool {
    std::env::var_os("FIELDGATE_IN_VM").is_some()
}

/// Runs the test `name` of this test binary again inside the rig VM, with `files` copied
/// in; prints the guest's output and returns its stdout, failing if the guest failed.
pub fn rerun_in_vm(name: &str, files: &[PathBuf], timeout_s: u32) -> String {
    need("qemu-system-x86_64");
    need("busybox");
    let start = Instant::now();
    let mut cmd = Command::new(root().join("hil/can-vm.sh"));
    cmd.env("FIELDGATE_VM_TIMEOUT", timeout_s.to_string());
    for f in files {
        cmd.arg("--file").arg(f);
    }
    let out = cmd
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture"])
        .output()
        .expect("run hil/can-vm.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "{name}: {:.1} s in the VM in all",
        start.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "{name} failed in the VM (see the guest's output above)"
    );
    stdout
}
