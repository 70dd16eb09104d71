"""The common layer built for this machine's architecture, and a stand-in for what Lambda's
python3.12 runtime provides: to import the handlers here as Lambda would (the arm64 layer cannot
load on an x86_64 machine)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

from apilake_dev import paths

ROOT = paths.ROOT
# What the Lambda python3.12 runtime itself provides besides the standard library.
RUNTIME_PACKAGES = ["boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3"]


def build_host_layer(folder: Path) -> Path:
    """`sam build` of the common layer alone (its Makefile, for this architecture); returns the
    layer's ``python`` folder, as Lambda mounts it at /opt/python."""
    folder.mkdir(parents=True, exist_ok=True)
    template = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Resources": {
            "CommonLayer": {
                "Type": "AWS::Serverless::LayerVersion",
                "Metadata": {"BuildMethod": "makefile", "BuildArchitecture": platform.machine()},
                "Properties": {"ContentUri": str(ROOT / "layers" / "common"), "CompatibleRuntimes": ["python3.12"]},
            }
        },
    }
    (folder / "template.yaml").write_text(yaml.safe_dump(template))
    sam_build(folder / "template.yaml", folder / "build", cwd=folder, extra_env={"LAYER_ARCH": platform.machine()})
    return folder / "build" / "CommonLayer" / "python"


def sam_build(template: Path, build_dir: Path, cwd: Path = ROOT, extra_env: dict[str, str] | None = None) -> None:
    """`sam build` from this environment (its python3.12 with pip on PATH, no telemetry); raises
    with sam's output if it fails."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        **(extra_env or {}),
    }
    result = subprocess.run(
        [str(bin_dir / "sam"), "build", "--template", str(template), "--build-dir", str(build_dir)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sam build of {template} failed:\n{result.stdout}\n{result.stderr}")


def runtime_packages(folder: Path) -> Path:
    """A folder holding only what the runtime provides (links to this environment's copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    site_packages = Path(next(p for p in sys.path if p.endswith("site-packages")))
    for name in RUNTIME_PACKAGES:
        (folder / name).symlink_to(site_packages / name)
    return folder
