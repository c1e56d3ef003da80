"""Static proof: cfn-lint and checkov find nothing in the templates, as written and as translated.

cfn-lint (in the main lock) lints the SAM source and the translated CloudFormation of each
environment (the translation shows what SAM adds: permissions, the schedule's role, the API body;
a cycle through the S3 notification only shows there). checkov runs from its own venv
(``.venv-checkov``, made by ``make test`` from ``infra/aws/checkov-requirements.txt``, since its pins
conflict with the lock), offline (``--skip-download``). Every check skipped is skipped next to its
resource with a comment; a test makes sure none is without one. Each tool is also shown to fail on
a broken template, so a clean result means something.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from infra_testkit import translated_core

from infra.aws.templates import AWS_DIR, ENVIRONMENTS, STACKS, load_template

REPO = AWS_DIR.parent.parent
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
SOURCES = [spec.template for spec in STACKS.values()]


@pytest.fixture(scope="module")
def translated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("translated")
    for env in ENVIRONMENTS:
        (folder / f"core-{env}.json").write_text(json.dumps(translated_core(env), indent=1))
    return folder


def cfn_lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def checkov(*paths: Path) -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run `make .venv-checkov` (make test does)")
    files = [arg for path in paths for arg in ("-f", str(path))]
    result = subprocess.run(
        [
            str(CHECKOV),
            *files,
            "--framework",
            "cloudformation",
            "--skip-download",
            "-o",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "BC_SKIP_MAPPING": "TRUE", "HOME": str(REPO)},
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = {"passed": 0, "failed": 0, "skipped": 0}
    failed: list[str] = []
    for item in reports:
        for key in summary:
            summary[key] += item["summary"][key]
        failed += [
            f"{c['check_id']} {c['resource']} ({c['file_path']})"
            for c in item["results"]["failed_checks"]
        ]
    return {**summary, "failed_checks": failed}


def test_cfn_lint_is_clean(translated_dir: Path) -> None:
    result = cfn_lint(*SOURCES, *sorted(translated_dir.iterdir()))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_cfn_lint_fails_on_a_broken_template(tmp_path: Path) -> None:
    # The core template's log edge, cut down to one function with a timeout Lambda refuses.
    function = load_template(STACKS["core"].template)["Resources"]["LogIngestFunction"]
    function["Properties"] = {
        key: function["Properties"][key] for key in ("Handler", "MemorySize", "Timeout")
    } | {"Runtime": "python3.12", "CodeUri": "s3://bucket/key.zip", "Timeout": 9000}
    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps(
            {
                "AWSTemplateFormatVersion": "2010-09-09",
                "Transform": "AWS::Serverless-2016-10-31",
                "Resources": {"LogIngestFunction": function},
            }
        )
    )
    result = cfn_lint(broken)
    assert result.returncode != 0 and "9000" in result.stdout, result.stdout


def test_checkov_is_clean(translated_dir: Path) -> None:
    report = checkov(*SOURCES, *sorted(translated_dir.iterdir()))
    assert report["failed_checks"] == []
    assert report["passed"] > 100


def test_checkov_fails_on_an_unencrypted_public_bucket(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'AWSTemplateFormatVersion: "2010-09-09"\nResources:\n  Open:\n    Type: AWS::S3::Bucket\n'
    )
    assert checkov(bad)["failed"] > 0


def _skips(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found += node.get("Metadata", {}).get("checkov", {}).get("skip", [])
        for value in node.values():
            found += _skips(value) if isinstance(value, dict) else []
    return found


def test_every_skipped_check_says_why() -> None:
    skips = [skip for path in SOURCES for skip in _skips(load_template(path)["Resources"])]
    assert skips, "the templates skip checks; this test must see them"
    for skip in skips:
        assert skip["id"].startswith("CKV_") and len(skip.get("comment", "")) > 30, skip
