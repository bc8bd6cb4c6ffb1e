"""Reading a cluster's answers (engines/kubernetes/feedback.py): warnings, rollout progress, stuck states."""

from __future__ import annotations

import pytest

from flotilla.engines.kubernetes.feedback import parse_warning, progress, stuck


def deployment(*, replicas=2, generation=3, observed=3, updated=2, available=2, total=2, conditions=()):
    return {"kind": "Deployment", "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available,
                       "replicas": total, "conditions": list(conditions)}}


def test_warning_headers_give_their_text():
    assert parse_warning('299 - "would violate PodSecurity \\"restricted:latest\\""') == \
        'would violate PodSecurity "restricted:latest"'
    assert parse_warning("something odd") == "something odd"


def test_a_deployment_is_done_only_when_every_replica_is_new_and_available():
    assert progress(deployment()).done
    assert not progress(deployment(observed=2)).done  # the controller has not seen the new spec yet
    assert not progress(deployment(updated=1)).done
    assert not progress(deployment(total=3)).done  # an old pod still runs
    assert progress(deployment(available=1)).line() == "Deployment web: 1/2 available, 2/2 up to date (rolling out)"


def test_a_statefulset_is_done_when_its_revision_is_the_update_revision():
    sts = {"kind": "StatefulSet", "metadata": {"name": "sessions", "generation": 1}, "spec": {"replicas": 3},
           "status": {"observedGeneration": 1, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                      "currentRevision": "a", "updateRevision": "b"}}
    assert not progress(sts).done
    sts["status"]["currentRevision"] = "b"
    assert progress(sts).done


def pod(*, waiting=None, scheduled=None):
    status = {"conditions": [scheduled] if scheduled else [],
              "containerStatuses": [{"name": "web", "state": {"waiting": waiting} if waiting else {"running": {}}}]}
    return {"metadata": {"name": "web-1"}, "status": status}


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "CrashLoopBackOff", "CreateContainerConfigError"])
def test_container_states_that_waiting_will_not_fix(reason):
    found = stuck(workloads=[], pods=[pod(waiting={"reason": reason, "message": "m"})], jobs=[])
    assert [s.line() for s in found] == [f"Pod web-1 container web: {reason} (m)"]


def test_states_that_resolve_by_waiting_are_not_stuck():
    assert stuck(workloads=[deployment(available=0)], jobs=[],
                 pods=[pod(waiting={"reason": "ContainerCreating"}), pod()]) == []


def test_unschedulable_pods_failed_jobs_and_passed_deadlines_are_stuck():
    unschedulable = pod(scheduled={"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                   "message": "0/3 nodes are available: 3 Insufficient memory."})
    job = {"metadata": {"name": "sessions-form"}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "limit reached"}]}}
    late = deployment(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                   "message": 'ReplicaSet "web-5d9c" has timed out progressing.'}])
    found = {s.reason for s in stuck(workloads=[late], pods=[unschedulable], jobs=[job])}
    assert found == {"Unschedulable", "BackoffLimitExceeded", "ProgressDeadlineExceeded"}
