"""libnftables' error text is for the operator, never for deciding: the same refusal reads
differently with other tables present ("did you mean table 'nat' in family ip?")."""

import pytest

from minifw.compile import hooks as plan
from minifw.errors import KernelError, UnsupportedError
from minifw.kernel import nft
from minifw.netlink.nftables import NftMsg


@pytest.mark.parametrize("text", [
    "internal:0:0-0: Error: Could not process rule: No such file or directory\n\n",
    "internal:0:0-0: Error: No such file or directory; did you mean table ‘nat’ in family ip?\n",
    "Error: Could not process rule: Operation not supported\n",
])
def test_every_refusal_is_the_same_kind_of_error_with_its_text(text):
    exc = nft._kernel_error(text)
    assert type(exc) is KernelError and not isinstance(exc, UnsupportedError)
    assert str(exc).startswith("nftables refused the change: internal:0:0-0: Error:"
                               if text.startswith("internal") else
                               "nftables refused the change: Error:")
    assert "\n" not in str(exc)


def test_the_queue_probes_are_our_own_batches_that_leave_nothing_behind():
    for batch in (plan.build_queue_probe_batch(), plan.build_xt_probe_batch()):
        kinds = [m[0] for m in batch._messages]
        assert kinds == [NftMsg.NEWTABLE, NftMsg.NEWCHAIN, NftMsg.NEWRULE, NftMsg.DELTABLE]
        assert list(batch.requests.values())[0] == "add table minifw_probe"
    native = plan.build_queue_probe_batch().to_bytes()
    assert b"queue\0" in native and b"NFQUEUE" not in native
    assert b"NFQUEUE" in plan.build_xt_probe_batch().to_bytes()
