"""The AWS templates as data: load them, fill in an environment's parameters, translate SAM offline.

In: ``infra/aws/sluice.yaml`` (SAM, stack 1: everything but the Flink application),
``infra/aws/flink-app.yaml`` (plain CloudFormation, stack 2: the MSF application) and
``infra/aws/params/<env>.json`` (one file per environment: the parameters of both stacks).
Out: templates as dicts with CloudFormation's intrinsic functions in their JSON form (``!Ref x`` is
``{"Ref": "x"}``), the SAM template translated to plain CloudFormation by aws-sam-translator (no
network, no credentials), and each stack's parameter list for ``create_stack``.

Why offline translation: the tests and ``sluice deploy --dry-run`` must work without an AWS account,
and moto's CloudFormation ignores the SAM transform, so it gets the translated template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "AWS_DIR",
    "ENVIRONMENTS",
    "STACKS",
    "StackSpec",
    "check_parameters",
    "load_parameters",
    "load_template",
    "stack_parameters",
    "translate_sam",
]

AWS_DIR = Path(__file__).resolve().parent
PARAMS_DIR = AWS_DIR / "params"
ENVIRONMENTS = ("dev", "prod")


@dataclass(frozen=True)
class StackSpec:
    """One of the two stacks: its template file and the name it gets in an environment."""

    key: str
    template: Path
    sam: bool

    def stack_name(self, env: str) -> str:
        return f"sluice-{env}-{self.key}"


STACKS = {
    "core": StackSpec("core", AWS_DIR / "sluice.yaml", sam=True),
    "flink": StackSpec("flink", AWS_DIR / "flink-app.yaml", sam=False),
}


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs
    """YAML with CloudFormation's short-form tags (``!Ref``, ``!Sub``, ``!GetAtt``, ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    """A template file as a dict (intrinsics in JSON form)."""
    with path.open(encoding="utf-8") as handle:
        loaded = yaml.load(handle, Loader=_CfnLoader)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: not a template (expected a mapping)")
    return loaded


def translate_sam(
    template: dict[str, Any], parameters: dict[str, str], region: str
) -> dict[str, Any]:
    """The SAM template as plain CloudFormation, translated here rather than by the service.

    A boto3 session that only names the region (no credentials, no call) tells the translator the
    region and partition for the ARNs it writes.
    """
    import logging

    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    # The translator's own usage metrics are never published; its warning about them is noise.
    logging.getLogger("samtranslator.metrics.metrics").setLevel(logging.ERROR)
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=region))
    translated: dict[str, Any] = translator.translate(
        json.loads(json.dumps(template)),
        parameter_values=dict(parameters),
        get_managed_policy_map=dict,  # the templates name no managed policy
    )
    return translated


def load_parameters(env: str) -> dict[str, dict[str, str]]:
    """``{"core": {...}, "flink": {...}}`` for an environment, from ``params/<env>.json``."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {env!r}: use one of {', '.join(ENVIRONMENTS)}")
    path = PARAMS_DIR / f"{env}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    stacks = {key: {k: str(v) for k, v in data.get(key, {}).items()} for key in STACKS}
    unknown = set(data) - set(STACKS) - {"description"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}")
    return stacks


def stack_parameters(values: dict[str, str]) -> list[dict[str, str]]:
    """``create_stack``'s ``Parameters`` from a name -> value mapping."""
    return [{"ParameterKey": key, "ParameterValue": value} for key, value in sorted(values.items())]


def check_parameters(template: dict[str, Any], values: dict[str, str]) -> list[str]:
    """What is wrong with ``values`` for ``template``'s Parameters, one line each (empty: fine).

    The checks CloudFormation would make at deploy time (unknown or missing parameters, allowed
    values, lengths, patterns, numeric ranges), made before anything is uploaded.
    """
    import re

    declared: dict[str, dict[str, Any]] = template.get("Parameters", {})
    problems = [f"unknown parameter {name}" for name in sorted(set(values) - set(declared))]
    for name, spec in declared.items():
        value = values.get(name, spec.get("Default"))
        if value is None:
            problems.append(f"parameter {name} is required")
            continue
        text = str(value)
        allowed = spec.get("AllowedValues")
        if allowed is not None and text not in [str(a) for a in allowed]:
            problems.append(f"parameter {name}={text!r} is not one of {allowed}")
        if spec.get("Type") == "Number":
            try:
                number = float(text)
            except ValueError:
                problems.append(f"parameter {name}={text!r} is not a number")
                continue
            low, high = spec.get("MinValue"), spec.get("MaxValue")
            if low is not None and number < float(low):
                problems.append(f"parameter {name}={text} is below its minimum {low}")
            if high is not None and number > float(high):
                problems.append(f"parameter {name}={text} is above its maximum {high}")
        else:
            if "MinLength" in spec and len(text) < int(spec["MinLength"]):
                problems.append(f"parameter {name} is shorter than {spec['MinLength']} characters")
            if "MaxLength" in spec and len(text) > int(spec["MaxLength"]):
                problems.append(f"parameter {name} is longer than {spec['MaxLength']} characters")
            pattern = spec.get("AllowedPattern")
            if pattern is not None and not re.fullmatch(pattern, text):
                problems.append(f"parameter {name}={text!r} does not match {pattern}")
    return problems
