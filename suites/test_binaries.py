"""Install steps 1-4: /opt/bin holds what each role needs, the same bytes on every node."""
from helpers import spec
from helpers.bootstrap.artifacts import shipped_version
from helpers.checks import expect, guide_section
from helpers.node_facts import BINARIES, BINARY_VERSIONS
from helpers.probes import reads
from helpers.trace import verifies

pytestmark = guide_section("Binaries in /opt/bin", "critical")


@verifies("G-SHOW-1", "G-STEP-1", "G-STEP-4", "G-STEP-6", "G-INST-5")
@reads(BINARIES)
def test_opt_bin_holds_what_the_role_needs(node, facts):
    missing = [b for b in spec.REQUIRED_BINARIES[node.role] if b not in facts.checksums()]
    expect(not missing, node.name, f"{spec.BIN_DIR} holds what a {node.role} needs",
           expected=", ".join(spec.REQUIRED_BINARIES[node.role]),
           found="missing " + ", ".join(missing),
           evidence={"sha256sum /opt/bin/*": facts.section("binaries")})


def _most_common(cluster, cluster_facts) -> dict[str, str]:
    """Per binary, the digest most nodes hold (the master's on a tie), over the nodes whose
    facts could be read: the odd node out is the one whose copy differs."""
    held: dict[str, list[str]] = {}
    readable = cluster_facts.readable()   # a node that did not answer reports it itself
    for other in sorted(cluster.nodes, key=lambda n: not n.is_master):  # master first
        if other.name not in readable:
            continue
        for name, digest in readable[other.name].checksums().items():
            held.setdefault(name, []).append(digest)
    return {name: max(digests, key=digests.count) for name, digests in held.items()}


@verifies("G-STEP-2", "G-STEP-3", "G-STEP-5")
@reads(BINARIES)
def test_binaries_identical_on_every_node(node, facts, cluster, cluster_facts, run_state):
    # without a bootstrap in this run (--no-bootstrap) nothing says what was shipped: the
    # copy most nodes hold is the reference (the master's alone would blame every minion
    # for a master that differs)
    shipped = ((run_state.get("bootstrap") or {}).get("checksums")
               or _most_common(cluster, cluster_facts))
    mine = facts.checksums()
    differing = sorted(n for n in mine if n in shipped and mine[n] != shipped[n])
    expect(bool(mine) and not differing, node.name, "binaries are identical to the shipped ones",
           expected="sha256 as shipped",
           found="differs: " + ", ".join(differing) if mine else "no checksum read",
           evidence={"sha256sum /opt/bin/*": facts.section("binaries"),
                     "shipped": "\n".join(f"{d}  {n}" for n, d in sorted(shipped.items()))})


@verifies("G-INST-1", "G-INST-2", "G-INST-4")
@reads(BINARY_VERSIONS)
def test_binaries_report_the_shipped_version(node, facts, run_state):
    """Exactly the version each of the guide's programs in /opt/bin reports on this node
    (v0.7.0, flannel 0.2.0, or what the inventory's artifacts said of themselves). A
    binary that is absent is test_opt_bin_holds_what_the_role_needs's finding; a version
    probe that answered nothing is a failure, never a pass."""
    present = [b for b in spec.VERSIONED_BINARIES if b in facts.checksums()]
    reported = facts.binary_versions()
    wanted = {b: shipped_version(b, run_state) for b in present}
    wrong = {b: reported.get(b, "(no answer)") for b in present
             if reported.get(b) != wanted[b]}
    expect(facts.ok("binary_versions") and bool(present) and not wrong, node.name,
           "each of the guide's binaries reports the version that was shipped",
           expected=", ".join(f"{b}: {v}" for b, v in wanted.items()) or "the guide's binaries",
           found=(", ".join(f"{b}: {v}" for b, v in wrong.items()) if wrong else
                  "the version probe did not run" if not facts.ok("binary_versions")
                  else "no binary of the guide's in /opt/bin"),
           evidence={"/opt/bin/<binary> -version": facts.section("binary_versions")})
