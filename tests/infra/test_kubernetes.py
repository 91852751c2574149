"""The KubeRay RayService: rendered from the settings, valid for Ray Serve, checked in
without drift, and free of secrets and endpoints."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from serving.kuberay import SECRETS, SETTINGS_CONFIGMAP, rayservice_manifest
from streamrank.settings import REPO_ROOT, Settings

CHECKED_IN = REPO_ROOT / "infra" / "kubernetes" / "rayservice.yaml"


def rendered(**settings: object) -> dict:
    return rayservice_manifest(Settings(home=Path("unused"), **settings))  # type: ignore[arg-type]


def test_the_checked_in_rayservice_is_the_settings_rendered() -> None:
    assert yaml.safe_load(CHECKED_IN.read_text()) == rendered(api_replicas=2, api_max_replicas=16)


def test_serve_config_v2_validates_against_rays_own_schema() -> None:
    manifest = yaml.safe_load(CHECKED_IN.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    config = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    assert config.proxy_location == "EveryNode" and config.http_options.host == "0.0.0.0"
    (app,) = config.applications
    assert app.import_path == "serving.app:app_builder"
    (api,) = app.deployments
    assert api.autoscaling_config["min_replicas"] == 2
    assert api.autoscaling_config["max_replicas"] == 16


def test_pods_take_settings_and_secrets_from_the_cluster_not_the_manifest() -> None:
    text = CHECKED_IN.read_text()
    manifest = yaml.safe_load(text)
    cluster = manifest["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert not [e for e in container["env"] if e["name"].startswith("STREAMRANK_")]
        sources = {next(iter(source.values()))["name"] for source in container["envFrom"]}
        assert sources == {SETTINGS_CONFIGMAP, SECRETS}
    assert "127.0.0.1" not in text and "localhost" not in text


def test_a_gpu_scorer_gets_a_gpu_worker_group() -> None:
    manifest = rendered(scorer_num_gpus=1)
    (group,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert group["groupName"] == "gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    config = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    scorer = {d.name: d for d in config.applications[0].deployments}["scorer-main"]
    assert scorer.ray_actor_options.num_gpus == 1
