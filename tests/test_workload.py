"""The workload's reading of the API (helpers/workload.py), without a cluster."""
import json

from helpers import workload


def answer(**pods) -> str:
    return "".join(f"{workload.POD_MARK}{name}\n{body}\n" for name, body in pods.items())


def pod(name, status="Running", host="10.120.0.2", ip="10.100.41.2") -> str:
    return json.dumps({"kind": "Pod", "id": name, "currentState": {
        "status": status, "host": host, "podIP": ip}})


def test_each_pod_is_read_on_its_own():
    error = json.dumps({"kind": "Status", "status": "Failure", "code": 500,
                        "message": "The requested resource does not exist."})
    text = answer(a=pod("a"), b=error, c=pod("c", "Waiting", "10.120.0.3", ""))
    assert workload.parse_pods(text) == {
        "a": {"status": "Running", "host": "10.120.0.2", "podIP": "10.100.41.2"},
        "c": {"status": "Waiting", "host": "10.120.0.3", "podIP": ""}}
    assert list(workload.unanswered(text)) == ["b"]
    assert "does not exist" in workload.unanswered(text)["b"]
    assert workload.parse_pods("") == {} and workload.parse_pods("garbage") == {}
    # an answer for another pod is not this one's
    assert workload.parse_pods(answer(a=pod("b"))) == {}


def test_pods_are_named_per_run_and_spread_by_one_host_port():
    names = workload.pod_names(type("C", (), {"nodes": [1, 2, 3]})(), "ab12")
    assert names == ["k8sconf-pod-ab12-1", "k8sconf-pod-ab12-2", "k8sconf-pod-ab12-3"]
    ports = {json.dumps(workload.manifest(n)["desiredState"]["manifest"]["containers"][0]["ports"])
             for n in names}
    assert len(ports) == 1 and str(workload.HOST_PORT) in ports.pop()
    command = workload.list_command(names, {"apiserver_address": "127.0.0.1",
                                            "apiserver_port": 8080})
    assert command.count("/api/v1beta1/pods/k8sconf-pod-ab12-") == 3
