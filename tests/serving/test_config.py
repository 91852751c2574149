"""The Serve config: derived from the settings, valid for Ray, checked in without drift."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serving.config import serve_config
from serving.experiments import assign_arm
from streamrank.settings import REPO_ROOT, Settings


def test_the_checked_in_serve_yaml_is_the_default_settings_rendered() -> None:
    path = REPO_ROOT / "infra" / "serve.yaml"
    assert yaml.safe_load(path.read_text()) == serve_config(Settings(home=Path("unused")))


def test_serve_config_validates_against_rays_schema_with_arms_and_autoscaling() -> None:
    settings = Settings(
        experiment_arms={"control": "", "candidate": "/models/v2"},
        scorer_min_replicas=1,
        scorer_max_replicas=4,
        scorer_num_gpus=1,
        api_replicas=2,
        api_max_replicas=6,
    )
    schema = ServeDeploySchema.model_validate(serve_config(settings))
    deployments = {d.name: d for d in schema.applications[0].deployments}
    assert set(deployments) == {"api", "scorer-control", "scorer-candidate"}
    scorer = deployments["scorer-control"]
    assert scorer.autoscaling_config["max_replicas"] == 4
    assert scorer.ray_actor_options.num_gpus == 1
    assert scorer.user_config == {"max_batch_size": 32, "batch_wait_timeout_s": 0.001}
    api = deployments["api"].autoscaling_config
    assert (api["min_replicas"], api["max_replicas"], api["target_ongoing_requests"]) == (2, 6, 2)
    fixed = serve_config(Settings(api_replicas=3))["applications"][0]["deployments"][0]
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed


def test_on_cpu_the_model_runs_inside_the_ingress_unless_asked_otherwise() -> None:
    arms = {"control": "", "candidate": ""}
    cpu = serve_config(Settings(experiment_arms=arms))
    assert [d["name"] for d in cpu["applications"][0]["deployments"]] == ["api"]
    split = serve_config(Settings(experiment_arms=arms, scorer_placement="deployment"))
    names = [d["name"] for d in split["applications"][0]["deployments"]]
    assert names == ["api", "scorer-control", "scorer-candidate"]
    api = cpu["applications"][0]["deployments"][0]
    assert api["logging_config"] == {"enable_access_log": False}


@pytest.mark.parametrize("arms", [{}, {"Bad Name": ""}])
def test_bad_arm_settings_are_refused(arms: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="arm"):
        Settings(experiment_arms=arms)


def test_arms_are_stable_and_even() -> None:
    arms = ["a", "b", "c"]
    users = [f"user-{i}" for i in range(6000)]
    first = [assign_arm(u, arms, "exp1") for u in users]
    assert first == [assign_arm(u, arms, "exp1") for u in users]  # stable
    assert all(1800 < first.count(a) < 2200 for a in arms)  # even
    other = [assign_arm(u, arms, "exp2") for u in users]
    assert 0.5 < sum(x != y for x, y in zip(first, other, strict=True)) / len(users) < 0.8


def test_a_queue_bound_becomes_serves_backpressure_with_retry_after() -> None:
    default = serve_config(Settings())["applications"][0]["deployments"][0]
    assert (default["max_ongoing_requests"], default["max_queued_requests"]) == (8, 8)
    unbounded = Settings(api_max_queued_requests=-1)
    assert "max_queued_requests" not in serve_config(unbounded)["applications"][0]["deployments"][0]
    settings = Settings(api_max_ongoing_requests=4, api_max_queued_requests=16)
    schema = ServeDeploySchema.model_validate(serve_config(settings))
    api = schema.applications[0].deployments[0]
    assert (api.max_ongoing_requests, api.max_queued_requests) == (4, 16)
    assert api.backpressure_config.status_code == 503
    assert api.backpressure_config.retry_after_s == 1.0
