"""A kernel client that keeps at most N bytes of a kernel's output (``SandboxedKernelManager``'s client).

The cap is applied as messages arrive from the kernel, before nbclient stores them in the notebook:
100 MB printed by a submission becomes a line saying the output was cut, never a 100 MB feedback page.
Each request (a cell, or one of the grader's own silent calls) has its own budget, and the whole
notebook a shared one; once that is spent a request still keeps ``FLOOR`` bytes, so the grader's own
small replies always arrive. Errors are never dropped (an error is what fails a test): only their
text is shortened.
"""
from __future__ import annotations

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import Type

FLOOR = 4096  # bytes every request keeps, whatever the notebook's budget
NOTICE = "\n[output cut by the grader: it keeps {cell} bytes of a cell's output, {total} of a notebook's]\n"


def _size(content: dict) -> int:
    if "text" in content:
        return len(content["text"])
    if "data" in content:
        return sum(len(v) if isinstance(v, str) else len(str(v)) for v in content["data"].values())
    if "traceback" in content:
        return sum(map(len, content["traceback"])) + len(content.get("evalue", ""))
    return len(str(content))


class CappedIOPubChannel(AsyncZMQSocketChannel):
    """The iopub channel, with output over budget replaced by a notice."""

    total = 2_000_000
    per_request = 200_000

    def _cap(self, msg: dict) -> dict:
        kind = msg["msg_type"]
        if kind not in ("stream", "display_data", "execute_result", "update_display_data", "error") and not kind.startswith("comm"):
            return msg
        if not hasattr(self, "_used"):
            self._used, self._spent, self._cut = {}, 0, set()
        parent = msg["parent_header"].get("msg_id", "")
        content = msg["content"]
        size = _size(content)
        used = self._used.get(parent, 0)
        allowed = max(min(self.per_request - used, self.total - self._spent), FLOOR - used, 0)
        self._used[parent] = used + size
        self._spent += size
        if size <= allowed:
            return msg
        notice = "" if parent in self._cut else NOTICE.format(cell=self.per_request, total=self.total)
        self._cut.add(parent)
        if kind == "error":
            content["traceback"] = [line[:200] for line in content.get("traceback", [])[:20]] + ([notice] if notice else [])
            content["evalue"] = content.get("evalue", "")[:1000]
        elif kind == "stream" and allowed:
            content["text"] = content["text"][:allowed] + notice
        elif notice:
            msg["msg_type"] = msg["header"]["msg_type"] = "stream"
            msg["content"] = {"name": "stdout", "text": notice}
        else:  # already cut: a message nbclient ignores
            msg["msg_type"] = msg["header"]["msg_type"] = "execute_input"
            msg["content"] = {"code": ""}
        return msg

    async def get_msg(self, timeout: float | None = None) -> dict:  # type: ignore[override]
        return self._cap(await super().get_msg(timeout))


class CappedKernelClient(AsyncKernelClient):
    """``AsyncKernelClient`` whose iopub channel caps output to its kernel manager's budgets."""

    iopub_channel_class = Type(CappedIOPubChannel)  # type: ignore[assignment]

    @property
    def iopub_channel(self):
        channel = super().iopub_channel
        km = self.parent
        if km is not None and not getattr(channel, "_configured", False):
            channel.total = getattr(km, "output_bytes", channel.total)
            channel.per_request = getattr(km, "output_bytes_per_cell", channel.per_request)
            channel._configured = True
        return channel
