"""The GPU-host path (`snakemake --use-singularity`): every job runs in its arm's image.

No container runtime can run here, so a stand-in `apptainer` takes its place on PATH: it answers
`--version`, "pulls" an image by writing its URL into the file Snakemake names, and for `exec`
records its argv and the NAMES of its environment, then runs the command on the host, where a
stand-in `servingbench` writes each job's outputs. So Snakemake 9 builds and runs its real
apptainer command lines (snakemake/deployment/singularity.py: `apptainer exec --home CWD
ARGS IMAGE bash -c CMD`), and the tests read them. Also here: containers/images.yaml against the
image definitions it names, and pinning digests into it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingbench.runtime.frameworks import known_arms

ROOT = Path(__file__).resolve().parent.parent
CONTAINERS = ROOT / "containers"
IMAGES = CONTAINERS / "images.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
PROFILES = ("seed", "current")
# Looks like a hub token, so any code that redacts tokens by shape would also hide it from us.
SENTINEL = "hf_SENTINELneverOnACommandLine0123456789"


def _pin_images():
    spec = importlib.util.spec_from_file_location("pin_images", CONTAINERS / "pin_images.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pin_images"] = module
    spec.loader.exec_module(module)
    return module


pin_images = _pin_images()


# ---- images.yaml and the image definitions -----------------------------------------------------

def images() -> dict[str, dict[str, str]]:
    return yaml.safe_load(IMAGES.read_text())


def test_every_profile_names_an_image_for_every_arm():
    """An arm a profile cannot run is left out of it, with a comment that names it and says why."""
    data, comments = images(), [line for line in IMAGES.read_text().splitlines() if "#" in line]
    assert set(data) == set(PROFILES)
    assert set(data["current"]) == set(known_arms())
    for profile in PROFILES:
        assert set(data[profile]) <= set(known_arms()), profile
        for arm in set(known_arms()) - set(data[profile]):
            assert any(f"Not in {profile}: {arm}" in line for line in comments), f"{profile} lacks {arm}"


def test_each_image_is_built_from_a_definition_in_containers():
    for entry in pin_images.read(IMAGES):
        assert "://" not in entry.value, "the rules add docker:// themselves"
        assert not re.search(r":[^/@]+@sha256:", entry.value), "apptainer refuses tag+digest together"
        assert entry.tag.split("-", 1)[0] in PROFILES
        assert entry.dockerfile.is_file(), f"{entry.profile}.{entry.arm}: no {entry.dockerfile}"
    # one registry for all: a half-moved file would pull from two places
    assert len({e.repo.rsplit("/", 1)[0] for e in pin_images.read(IMAGES)}) == 1


# What each part of a tag promises, and where the definition must say so.
_TAG_PARTS = {
    "pt": lambda v, text: f"pytorch/pytorch:{v}-" in text or f"torch.__version__.split('+')[0] == '{v}'" in text,
    "cu": lambda v, text: (f"cuda{v[:-1]}.{v[-1]}-" in text or f"torch.version.cuda == '{v[:-1]}.{v[-1]}'" in text
                           or f"nvidia/cuda:{v[:-1]}.{v[-1]}." in text),
    "tf": lambda v, text: f"transformers=={v}" in text,
    "vllm": lambda v, text: f"vllm-openai:v{v}" in text or f"/v{v}/vllm-{v}+" in text,
    "tgi": lambda v, text: f"text-generation-inference:{v}" in text,
    "sglang": lambda v, text: f"lmsysorg/sglang:v{v}" in text and f"startswith('{v}')" in text,
    "llamacpp": lambda v, text: f"LLAMA_CPP_PYTHON={v}" in text,
}


def _definition_text(dockerfile: Path) -> str:
    """The Dockerfile plus every lock it installs."""
    text = dockerfile.read_text()
    for lock in re.findall(r"([a-z-]+\.txt)", text):
        path = CONTAINERS / "requirements" / lock
        assert path.is_file(), f"{dockerfile.name} installs {lock}, which is missing"
        text += path.read_text()
    return text


def test_the_versions_a_tag_names_are_the_ones_its_definition_pins():
    for ref, (dockerfile, users) in pin_images.images().items():
        text = _definition_text(dockerfile)
        tag = ref.rsplit(":", 1)[1]
        parts = tag.split("-")[1:]
        assert parts, ref
        for part in parts:
            m = re.fullmatch(r"([a-z]+)([0-9][0-9.]*)", part)
            assert m and m[1] in _TAG_PARTS, f"{ref}: tag part {part!r} means nothing here"
            assert _TAG_PARTS[m[1]](m[2], text), f"{ref}: {dockerfile.name} does not pin {part}"


def test_seed_profile_choices_are_stated():
    data, text = images(), IMAGES.read_text()
    # transformers serve does not exist in seed-era Transformers: the current image serves it
    assert data["seed"]["transformers-serve"] == data["current"]["transformers-serve"]
    assert data["seed"]["transformers-serve"] != data["seed"]["transformers-naive"]
    assert "4.55" in text
    assert data["seed"]["llamacpp"] == data["current"]["llamacpp"]  # no seed-era llama-server form
    # TGI: no release has CUDA 11.8 + PyTorch 2.1; the deviation and the licence are written down
    assert "DEVIATION" in text and "HFOIL-1.0" in text
    tgi_seed = (CONTAINERS / "tgi" / "seed.Dockerfile").read_text()
    assert "text-generation-inference:1.1.1" in tgi_seed and "HFOIL-1.0" in tgi_seed
    seed = (CONTAINERS / "transformers" / "seed.Dockerfile").read_text()
    assert "ARG BASE=pytorch/pytorch:2.1.0-cuda11.8-cudnn8-runtime" in seed
    vllm = (CONTAINERS / "vllm" / "seed.Dockerfile").read_text()
    assert "ARG BASE=pytorch/pytorch:2.1.0-cuda11.8-cudnn8-runtime" in vllm
    assert "vllm-0.2.4+cu118-cp310-cp310-manylinux1_x86_64.whl" in vllm and "xformers==0.0.22.post7" in vllm


def test_locks_are_complete_and_leave_the_base_images_cuda_stack_alone():
    for lock in sorted((CONTAINERS / "requirements").glob("*.txt")):
        names = {re.split(r"[=;\s]", line, 1)[0].lower() for line in lock.read_text().splitlines()
                 if line and not line.startswith((" ", "#"))}
        assert {"httpx", "psutil", "nvidia-ml-py"} <= names, lock.name  # the in-container runtime
        assert "torch" not in names and "triton" not in names, lock.name
        assert not [n for n in names if n.startswith("nvidia-") and n != "nvidia-ml-py"], lock.name
        for line in lock.read_text().splitlines():
            if line and not line.startswith((" ", "#")):
                assert re.match(r"^[A-Za-z0-9_.-]+==[^=\s]+(\s*;.*)?$", line), f"{lock.name}: unpinned {line!r}"
    seed = (CONTAINERS / "requirements" / "transformers-seed.txt").read_text()
    assert "transformers==4.36.2" in seed
    assert "pydantic==1.10.13" in (CONTAINERS / "requirements" / "vllm-seed.txt").read_text()


def test_build_scripts_parse_and_list_what_images_yaml_names():
    for script, shell in ((ROOT / "benchmarks" / "build_images.sh", "bash"),
                          (CONTAINERS / "lock-requirements.sh", "bash"),
                          (CONTAINERS / "install-servingbench.sh", "sh")):
        subprocess.run([shell, "-n", str(script)], check=True)
    listed = subprocess.run(["bash", str(ROOT / "benchmarks" / "build_images.sh"), "--list"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    rows = {line.split()[0]: line.split()[1] for line in listed if line.strip()}
    assert rows == {ref: str(df.relative_to(ROOT)) for ref, (df, _) in pin_images.images().items()}
    # every definition in containers/ is built for some profile, except the CPU variant
    defined = {str(p.relative_to(ROOT)) for p in CONTAINERS.glob("*/*.Dockerfile")}
    assert defined - set(rows.values()) == {"containers/transformers/cpu.Dockerfile", "containers/llamacpp/cpu.Dockerfile"}


def test_pinning_writes_the_digest_alone_and_keeps_the_tag(tmp_path):
    path = tmp_path / "images.yaml"
    shutil.copy(IMAGES, path)
    pin_images.move("ghcr.io/example", path)
    before = pin_images.images(path=path)
    ref = next(r for r in before if ":seed-" in r and "servingbench-vllm" in r)
    digest = "sha256:" + "ab" * 32
    assert pin_images.pin(ref, digest, path) == 1
    data = yaml.safe_load(path.read_text())
    assert data["seed"]["vllm"] == f"ghcr.io/example/servingbench-vllm@{digest}"
    assert data["current"]["vllm"].startswith("ghcr.io/example/servingbench-vllm:current-")
    line = next(x for x in path.read_text().splitlines() if digest in x)
    assert f"# tag: {ref.rsplit(':', 1)[1]}" in line
    # the pinned entry still maps back to the same definition and tag; comments survive
    assert pin_images.images(path=path) == before
    assert "DEVIATION" in path.read_text()
    with pytest.raises(ValueError):
        pin_images.pin(ref, "sha256:short", path)
    # a registry move drops digests (they belong to the old registry)
    pin_images.move("registry.example.org/lab", path)
    assert yaml.safe_load(path.read_text())["seed"]["vllm"].startswith(
        "registry.example.org/lab/servingbench-vllm:seed-")


# ---- the Snakemake container path, with a stand-in apptainer -----------------------------------

STAND_IN_APPTAINER = r'''#!{python}
"""Stand-in apptainer: records argv and environment NAMES (never values), then acts."""
import json, os, subprocess, sys
args = sys.argv[1:]
record = {{"tool": "apptainer", "argv": args, "env_names": sorted(os.environ), "cwd": os.getcwd()}}
def log():
    with open(os.environ["STANDIN_LOG"], "a") as fh:
        fh.write(json.dumps(record) + "\n")
if args[:1] in (["--version"], ["version"]):
    log()
    print("apptainer version 1.3.4")
    sys.exit(0)
verbs = [a for a in args if not a.startswith("-")]
if verbs and verbs[0] == "pull":
    name, url = args[args.index("--name") + 1], args[-1]
    with open(name, "w") as fh:  # Snakemake runs pull in its image folder
        fh.write(url)
    record["url"] = url
    log()
    sys.exit(0)
if verbs and verbs[0] == "exec":
    image, shell, dash_c, command = args[-4:]
    assert dash_c == "-c", args
    record["image"] = image
    record["url"] = open(image).read()
    log()
    sys.exit(subprocess.call([shell, "-c", command]))  # "inside the container": on the host
log()
sys.exit(2)
'''

STAND_IN_SERVINGBENCH = r'''#!{python}
"""Stand-in servingbench: writes each job's outputs the way the real commands name them."""
import json, os, pathlib, sys
args = sys.argv[1:]
with open(os.environ["STANDIN_LOG"], "a") as fh:
    fh.write(json.dumps({{"tool": "servingbench", "argv": args}}) + "\n")
out = pathlib.Path(args[args.index("--out") + 1]) if "--out" in args else None
if args[0] == "prepare-model":
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text("{{}}")
elif args[0] == "build-workload":
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("")
elif args[0] == "run-cell":
    spec = json.loads(args[args.index("--spec") + 1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({{"status": "ok", "image": spec["server"]["image"]}}))
    out.with_name(out.name[: -len(".json")] + ".requests.jsonl").write_text("")
'''


@pytest.fixture
def standins(tmp_path):
    """(env, log path, workdir, HF_HOME): stand-ins first on PATH, tokens set to the sentinel."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in (("apptainer", STAND_IN_APPTAINER), ("servingbench", STAND_IN_SERVINGBENCH)):
        exe = bindir / name
        exe.write_text(body.format(python=sys.executable))
        exe.chmod(0o755)
    log = tmp_path / "standin.jsonl"
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("APPTAINER", "SINGULARITY", "SNAKEMAKE"))}
    env.update(PATH=f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               STANDIN_LOG=str(log), HF_TOKEN=SENTINEL, HUGGING_FACE_HUB_TOKEN=SENTINEL,
               HF_HOME=str(hf_home), XDG_CACHE_HOME=str(tmp_path / "cache"))
    return env, log, work, hf_home


def snakemake(args: list[str], env: dict[str, str], work: Path) -> str:
    proc = subprocess.run(SNAKEMAKE + ["-d", str(work)] + args, env=env, cwd=work,
                          capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def records(log: Path, tool: str) -> list[dict]:
    if not log.exists():
        return []
    return [r for r in map(json.loads, log.read_text().splitlines()) if r["tool"] == tool]


def config_for(profile: str, tmp_path: Path, images: dict[str, str] | None = None) -> Path:
    """config.yaml with the given container profile and arm image overrides (else unchanged)."""
    if profile == "seed" and not images:
        return ROOT / "config.yaml"
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["profile"] = profile
    for arm, image in (images or {}).items():
        data["frameworks"][arm]["image"] = image
    path = tmp_path / f"config-{profile}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def docker_urls(profile: str) -> dict[str, str]:
    """The images of config.yaml's arms (llamacpp has an image but is a CPU-demo arm)."""
    arms = yaml.safe_load((ROOT / "config.yaml").read_text())["frameworks"]
    return {arm: f"docker://{image}" for arm, image in images()[profile].items() if arm in arms}


@pytest.mark.parametrize("profile, flags", [
    ("seed", ["--use-singularity", "--singularity-args=--nv"]),
    ("seed", ["--sdm", "apptainer", "--apptainer-args=--nv"]),  # what --use-singularity aliases
    ("current", ["--use-singularity", "--singularity-args=--nv"]),
])
def test_dry_run_of_the_whole_matrix_pulls_exactly_the_profiles_images(standins, tmp_path, profile, flags):
    env, log, work, _ = standins
    config = config_for(profile, tmp_path)
    out = snakemake(["--cores", "1", "-n", "--configfile", str(config)] + flags, env, work)
    pulled = set(re.findall(r"Singularity image (\S+) will be pulled", out))
    arms = yaml.safe_load(config.read_text())["frameworks"]  # images.yaml also has arms config.yaml lacks
    assert pulled == {url for arm, url in docker_urls(profile).items() if arm in arms}
    assert {tuple(r["argv"]) for r in records(log, "apptainer")} == {("--version",)}  # nothing pulled or run


def test_an_arms_image_in_the_config_replaces_images_yaml(standins, tmp_path):
    """The no-registry route of containers/README.md: an apptainer URI with a scheme passes as is."""
    env, log, work, _ = standins
    local = "docker-daemon://servingbench-vllm:seed-local"
    config = config_for("seed", tmp_path, {"vllm": local})
    out = snakemake(["--cores", "1", "-n", "--use-singularity", "--singularity-args=--nv", "--configfile",
                     str(config)], env, work)
    pulled = set(re.findall(r"Singularity image (\S+) will be pulled", out))
    assert pulled == (set(docker_urls("seed").values()) - {docker_urls("seed")["vllm"]}) | {local}


def _arm_of(command: str) -> str:
    m = re.search(r"--out results/(?:cells|sweeps)/([^/]+)/", command)
    return m[1] if m else "transformers-naive"  # prepare_model and build_workload use its image


def _no_sentinel_anywhere(log: Path, output: str, work: Path) -> None:
    assert SENTINEL not in log.read_text()  # every recorded argv (and only env NAMES are recorded)
    assert SENTINEL not in output
    for path in work.rglob("*"):
        if path.is_file():
            assert SENTINEL.encode() not in path.read_bytes(), f"token written to {path}"


def test_every_job_runs_in_its_arms_image_with_the_gpu_and_no_token_on_a_command_line(standins):
    """A real (not dry) run through the container path: one cell of each arm plus a sweep."""
    env, log, work, hf_home = standins
    targets = [f"results/cells/{arm}/gpt2/chat/stream.json" for arm in docker_urls("seed")]
    targets.append("results/sweeps/tgi/gpt2/concurrency.json")
    out = snakemake(["--cores", "1", "--configfile", str(ROOT / "config.yaml"), "--use-singularity",
                     f"--singularity-args=--nv --bind {hf_home}"] + targets, env, work)
    urls = docker_urls("seed")

    pulls = [r for r in records(log, "apptainer") if "pull" in r["argv"]]
    assert sorted(r["url"] for r in pulls) == sorted(set(urls.values()))

    execs = [r for r in records(log, "apptainer") if "exec" in r["argv"]]
    ran = {}
    for r in execs:
        argv, command = r["argv"], r["argv"][-1]
        arm = _arm_of(command)
        assert r["url"] == urls[arm], f"{command[:80]}: ran in {r['url']}, not {arm}'s image"
        options = argv[argv.index("exec") + 1:-4]
        assert "--nv" in options
        assert options[options.index("--home") + 1] == str(work)  # results/ and models/ are under it
        assert options[options.index("--bind") + 1] == str(hf_home)
        # tokens reach the container through its environment (apptainer passes it), by name only
        assert {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} <= set(r["env_names"])
        assert "--cleanenv" not in options and "--containall" not in options
        ran.setdefault(arm, []).append(shlex.split(command.split(";", 1)[-1])[:2])
    assert set(ran) == set(urls)
    assert ["servingbench", "prepare-model"] in ran["transformers-naive"]
    assert ["servingbench", "build-workload"] in ran["transformers-naive"]
    assert sum(len(v) for v in ran.values()) == len(execs) == len(targets) + 2

    # each cell's spec names the image it ran in, so its result records it
    for r in records(log, "servingbench"):
        if r["argv"][0] == "run-cell":
            spec = json.loads(r["argv"][r["argv"].index("--spec") + 1])
            assert f"docker://{spec['server']['image']}" == urls[spec["server"]["arm"]]
            assert spec["server"]["profile"] == "seed"
    _no_sentinel_anywhere(log, out, work)


def test_the_sdm_alias_runs_a_job_the_same_way(standins):
    env, log, work, _ = standins
    # the target first: --sdm takes every word after it as a deployment method
    snakemake(["models/gpt2", "--cores", "1", "--configfile", str(ROOT / "config.yaml"),
               "--sdm", "apptainer", "--apptainer-args=--nv"], env, work)
    (run,) = [r for r in records(log, "apptainer") if "exec" in r["argv"]]
    assert run["url"] == docker_urls("seed")["transformers-naive"]
    assert "--nv" in run["argv"] and "prepare-model" in run["argv"][-1]
    assert SENTINEL not in log.read_text()
