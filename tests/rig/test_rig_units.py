"""The rig's pure parts, without a control plane: build fix, certificates, flags, statuses."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from rig import k8sbuild
from rig.certs import make_certificates
from rig.components import COMPONENTS, Layout
from rig.podstatus import Action, Observed, build_status


def _fake_source(root: Path, version: str = "v1.0.1") -> Path:
    src = root / "kubernetes-1.20.2"
    vendored = src / "vendor" / "github.com" / "modern-go" / "reflect2"
    vendored.mkdir(parents=True)
    (vendored / "old_broken.go").write_text("package reflect2\n")
    (src / "go.mod").write_text(
        f"module k8s.io/kubernetes\n\tgithub.com/modern-go/reflect2 {version}\n")
    (src / "vendor" / "modules.txt").write_text(f"# github.com/modern-go/reflect2 {version}\n")
    return src


def _fake_reflect2(root: Path) -> Path:
    pkg = root / "reflect2-1.0.2"
    pkg.mkdir()
    names = ("reflect2.go", "go_above_118.go", "reflect2_amd64.s", "reflect2_test.go", "README")
    for name in names:
        (pkg / name).write_text("package reflect2\n")
    return pkg


def test_the_reflect2_fix_swaps_the_vendored_package_and_the_recorded_version(
        tmp_path: Path) -> None:
    src = _fake_source(tmp_path)
    k8sbuild.apply_reflect2_fix(src, _fake_reflect2(tmp_path))
    vendored = src / "vendor" / "github.com" / "modern-go" / "reflect2"
    assert sorted(p.name for p in vendored.iterdir()) == [
        "go_above_118.go", "reflect2.go", "reflect2_amd64.s"]
    assert "reflect2 v1.0.2" in (src / "go.mod").read_text()
    assert "reflect2 v1.0.2" in (src / "vendor" / "modules.txt").read_text()


def test_the_reflect2_fix_refuses_a_source_tree_it_does_not_recognise(tmp_path: Path) -> None:
    src = _fake_source(tmp_path, version="v9.9.9")
    with pytest.raises(k8sbuild.BuildError, match=r"does not name reflect2 v1\.0\.1"):
        k8sbuild.apply_reflect2_fix(src, _fake_reflect2(tmp_path))
    with pytest.raises(k8sbuild.BuildError, match="is missing"):
        k8sbuild.apply_reflect2_fix(src, tmp_path / "absent")


def test_the_cache_counts_only_complete_binary_sets(tmp_path: Path) -> None:
    partial = tmp_path / "k8s-1-aaa" / "bin"
    partial.mkdir(parents=True)
    (partial / "kube-apiserver").write_text("")
    (partial / "kube-apiserver").chmod(0o755)
    assert k8sbuild.find_cached(tmp_path) is None
    for name in k8sbuild.BINARIES:
        (partial / name).write_text("")
        (partial / name).chmod(0o755)
    assert k8sbuild.find_cached(tmp_path) == partial


def test_certificates_carry_the_sans_and_the_admin_group(tmp_path: Path) -> None:
    paths = make_certificates(tmp_path)
    serving = x509.load_pem_x509_certificate(paths.serving_crt.read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    admin = x509.load_pem_x509_certificate(paths.admin_crt.read_bytes())
    orgs = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]
    assert oct(paths.admin_key.stat().st_mode & 0o777) == "0o600"


def test_every_component_listens_on_loopback_or_the_given_address_on_the_ports_given() -> None:
    ports = {name: 40000 + i for i, name in enumerate([*COMPONENTS, "etcd-peer"])}
    layout = Layout(Path("/state"))
    address = "10.247.3.1"  # the control plane's own bridge address (rig.hostnet)
    for comp in COMPONENTS.values():
        args = comp.args(layout, ports, address)
        listening = [a for a in args if "bind-address=" in a or "listen-" in a]
        assert listening
        allowed: tuple[str, ...] = ("=127.0.0.1", "=http://127.0.0.1:")
        if comp.name == "kube-apiserver":  # only the apiserver may use the bridge address
            allowed = (*allowed, f"={address}")
        assert all(any(x in a for x in allowed) for a in listening), (comp.name, listening)
        assert any(str(ports[comp.name]) in a for a in args)
    apiserver = COMPONENTS["kube-apiserver"].args(layout, ports, address)
    assert f"--advertise-address={address}" in apiserver
    assert "--insecure-port=0" in apiserver
    assert "--port=0" in COMPONENTS["kube-controller-manager"].args(layout, ports, address)


def test_the_serving_certificate_names_the_extra_address(tmp_path: Path) -> None:
    paths = make_certificates(tmp_path, extra_ips=("10.247.3.1",))
    serving = x509.load_pem_x509_certificate(paths.serving_crt.read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.247.3.1") in sans.get_values_for_type(x509.IPAddress)


OBS = Observed(started="2024-01-01T00:00:00Z", pod_ip="10.245.0.2", host_ip="127.0.0.1")


def _pod(restart: str = "Always") -> dict[str, object]:
    return {"metadata": {"name": "p", "namespace": "n"},
            "spec": {"restartPolicy": restart, "containers": [{"name": "m", "image": "img:1"}],
                     "initContainers": [{"name": "init", "image": "img:1"}]}}


@pytest.mark.parametrize(("action", "restart", "phase", "ready"), [
    pytest.param(Action("ready"), "Always", "Running", True, id="ready"),
    pytest.param(Action("succeed"), "Never", "Succeeded", False, id="succeed"),
    pytest.param(Action("oom"), "Never", "Failed", False, id="oom-in-a-job"),
    pytest.param(Action("imagepull"), "Always", "Pending", False, id="image-pull"),
    pytest.param(Action("pending"), "Always", "Pending", False, id="pending"),
])
def test_each_action_yields_the_kubelet_phase(action: Action, restart: str, phase: str,
                                              ready: bool) -> None:
    status = build_status(_pod(restart), action, OBS, "2024-01-01T00:00:05Z")
    assert status["phase"] == phase
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds["Ready"] == ("True" if ready else "False")
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert ("podIP" in status) == (phase != "Pending")


def test_a_run_process_that_exits_in_a_job_pod_fails_it_with_its_message() -> None:
    ended = Observed(started=OBS.started, pod_ip=OBS.pod_ip, host_ip=OBS.host_ip,
                     exit_code=4, finished="2024-01-01T00:00:09Z", message="boom")
    status = build_status(_pod("Never"), Action("run"), ended, "2024-01-01T00:00:10Z")
    term = status["containerStatuses"][0]["state"]["terminated"]
    assert status["phase"] == "Failed"
    assert (term["exitCode"], term["message"]) == (4, "boom")
