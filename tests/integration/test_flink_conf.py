"""flink_conf/ stays one configuration: the FlinkDeployment repeats config.yaml's settings (the
operator takes them in flinkConfiguration) with the same values, and the local cluster's written
config.yaml is the template plus only its own local keys."""

from __future__ import annotations

from pathlib import Path

import yaml

from flink_jobs.cluster import Cluster, flatten_config, write_config
from flink_jobs.settings import REPO_ROOT, ClusterSettings

CONF = REPO_ROOT / "flink_conf"


def shared_settings() -> dict[str, object]:
    flat = flatten_config(yaml.safe_load((CONF / "config.yaml").read_text()))
    flat.pop("env.java.opts.all")  # the JVM flags the Flink image's own config.yaml sets
    return flat


def test_the_flink_deployment_repeats_config_yaml_exactly():
    deployment = yaml.safe_load((CONF / "flink-deployment.yaml").read_text())
    configured = {k: str(v) for k, v in deployment["spec"]["flinkConfiguration"].items()}
    for key, value in shared_settings().items():
        if key == "parallelism.default":
            continue  # production runs the job at parallelism 2, the local default is 1
        assert configured.get(key) == str(value), key
    sidecar = deployment["spec"]["taskManager"]["podTemplate"]["spec"]["containers"][1]
    assert sidecar["args"][:3] == ["python", "-m", "apache_beam.runners.worker.worker_pool_main"]


def test_the_written_config_is_the_template_plus_local_keys(tmp_path: Path):
    settings = ClusterSettings(flink_dir=tmp_path, checkpoint_interval_seconds=2)
    cluster = Cluster(tmp_path, 8081, 6123, 6124, tmp_path / "home", tmp_path / "python")
    written = flatten_config(yaml.safe_load(write_config(settings, cluster).read_text()))
    for key, value in shared_settings().items():
        if key != "execution.checkpointing.interval":
            assert written[key] == value, key
    assert written["execution.checkpointing.interval"] == "2 s"
    assert written["rest.bind-address"] == written["jobmanager.bind-host"] == "127.0.0.1"
    assert written["execution.checkpointing.dir"] == (tmp_path / "checkpoints").as_uri()
    assert written["taskmanager.numberOfTaskSlots"] == 2
