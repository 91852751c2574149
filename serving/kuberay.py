"""The application on Kubernetes: a KubeRay ``RayService`` whose ``serveConfigV2`` is the
Serve config the settings give (``serving/config.py``), so a cluster run by the KubeRay
operator deploys exactly what ``streamrank serve`` deploys.

The manifest holds no secret and no endpoint: every pod reads its ``STREAMRANK_*``
variables from a ConfigMap (Kafka bootstrap, Redis Cluster seeds, topics) and a Secret
(keys, the pseudonym key, the token secret), the same on every pod, as several hosts need.
The home (catalog, models) is a ReadOnlyMany volume at the same path on every pod.
``streamrank serve-config --rayservice`` prints it; ``infra/kubernetes/rayservice.yaml``
is that output for the defaults, kept in sync by a test.
"""

from __future__ import annotations

from typing import Any

import yaml

from serving.config import APP_NAME, ray_env, serve_config
from streamrank.settings import Settings

HOME = "/var/lib/streamrank"  # the image's STREAMRANK_HOME (infra/docker/Dockerfile)
SETTINGS_CONFIGMAP = "streamrank-settings"
SECRETS = "streamrank-secrets"


class _Block(str):
    """A string YAML writes as a literal block (``|``), as KubeRay's examples write
    ``serveConfigV2``."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Block, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")
)


def manifest_yaml(manifest: dict[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False)


def _container(name: str, image: str, settings: Settings, cpus: int, gpus: int) -> dict[str, Any]:
    env = {k: v for k, v in ray_env(settings).items() if not k.startswith("STREAMRANK_")}
    limits: dict[str, Any] = {"cpu": str(cpus), "memory": f"{4 * cpus}Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {
        "name": name,
        "image": image,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "envFrom": [
            {"configMapRef": {"name": SETTINGS_CONFIGMAP}},
            {"secretRef": {"name": SECRETS}},
        ],
        "resources": {"requests": dict(limits), "limits": limits},
        "volumeMounts": [{"name": "home", "mountPath": HOME, "readOnly": True}],
    }


def _pod(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "spec": {
            "containers": [container],
            "volumes": [
                {"name": "home", "persistentVolumeClaim": {"claimName": "streamrank-home"}}
            ],
        }
    }


def rayservice_manifest(
    settings: Settings,
    image: str = "streamrank:latest",
    ray_version: str | None = None,
    workers: tuple[int, int] = (1, 8),
) -> dict[str, Any]:
    """A ``ray.io/v1`` RayService: a head that schedules no replicas (``num-cpus: 0``) and
    serves HTTP, and a worker group autoscaled between ``workers`` pods, on GPUs when the
    scorer asks for them. Serve listens on every node (``EveryNode``) behind the
    operator's Service."""
    import ray

    served = settings.model_copy(
        update={"serve_host": "0.0.0.0", "serve_proxy_location": "EveryNode"}
    )
    gpus = 1 if settings.scorer_num_gpus > 0 else 0
    head = _container("ray-head", image, served, cpus=2, gpus=0)
    head["ports"] = [
        {"containerPort": 6379, "name": "gcs-server"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": served.serve_port, "name": "serve"},
    ]
    least, most = workers
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": APP_NAME},
        "spec": {
            "serveConfigV2": _Block(yaml.safe_dump(serve_config(served), sort_keys=False)),
            "rayClusterConfig": {
                "rayVersion": ray_version or ray.__version__,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _pod(head),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu" if gpus else "cpu",
                        "replicas": least,
                        "minReplicas": least,
                        "maxReplicas": most,
                        "rayStartParams": {},
                        "template": _pod(_container("ray-worker", image, served, 4, gpus)),
                    }
                ],
            },
        },
    }
