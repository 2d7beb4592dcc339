"""Durable event capture: what the service acknowledged survives a SIGKILL of the whole
service, the pipeline never reads a partial file, and counts conserve end to end.

The service runs on a data directory of its own (registry and Feast stores copied
from the trained system, no raw events), so every event file in it is the service's.
"""

from __future__ import annotations

import http.client
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from drivers.launcher import Server, run_service
from recloop.data.ingest import event_partition_counts, validate_event_partition
from recloop.data.layout import DataLayout, parquet_files
from tests.background import BackgroundLoad
from tests.serving_copy import copy_for_serving
from tests.trained_system import TrainedSystem, call, get

THREADS = 4
K = 5
# Connection failures a client sees when the server dies under it.
CRASH_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


class Traffic(BackgroundLoad):
    """Client threads: recommend, then a durable click on one shown item, until stopped
    or the server is gone; records every click the service acknowledged as durable.
    `through_crash`: once `killed` is set, a dropped connection is counted (`dropped`)
    and the thread goes on, for a server that keeps serving when one worker dies."""

    def __init__(self, url: str, durable: bool = True, through_crash: bool = False) -> None:
        super().__init__(THREADS)
        self.url = url
        self.durable = durable
        self.through_crash = through_crash
        self.killed = threading.Event()
        self.acked: list[tuple[str, str]] = []
        self.dropped = 0

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            try:
                self._one(rng)
            except CRASH_ERRORS as exc:
                if not self.killed.is_set():
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    return
                if not self.through_crash:
                    return
                self.dropped += 1

    def _one(self, rng: random.Random) -> None:
        user = str(rng.randint(1, 943))
        status, shown = call(f"{self.url}/recommend", {"user_id": user, "k": K})
        if status != 200:
            self.failures.append(f"/recommend {status}: {shown}")
            return
        item = shown["items"][rng.randrange(K)]["item_id"]
        body = {
            "request_id": shown["request_id"],
            "user_id": user,
            "item_id": item,
            "event_type": "click",
            "durable": self.durable,
        }
        status, answer = call(f"{self.url}/feedback", body)
        if status != 200 or answer["durable"] is not self.durable:
            self.failures.append(f"/feedback {status}: {answer}")
        elif self.durable:
            self.acked.append((shown["request_id"], item))

    def wait_for(self, acked: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < acked and not self.failures:
            assert time.monotonic() < deadline, f"only {len(self.acked)} durable acks"
            time.sleep(0.05)


def raw_files(layout: DataLayout) -> list[Path]:
    return [
        path
        for tenant in layout.tenants()
        for day in layout.event_days(tenant)
        for path in parquet_files(layout.raw_events_partition(tenant, day))
    ]


def read_all(files: list[Path]) -> pd.DataFrame:
    """Every file whole: a partial Parquet file has no footer and fails here."""
    frames = []
    for path in files:
        table = pq.read_table(path)
        assert table.num_rows == pq.ParquetFile(path).metadata.num_rows > 0
        frames.append(table.to_pandas())
    return pd.concat(frames, ignore_index=True)


def validate_all(layout: DataLayout) -> tuple[int, int, int]:
    """(read, valid, quarantined) over every partition, through the pipeline's validation;
    each partition's recount on disk must agree and conserve."""
    totals = Counter()
    now = datetime.now(UTC)
    for tenant in layout.tenants():
        for day in layout.event_days(tenant):
            report = validate_event_partition(layout, tenant, day, now)
            counts = event_partition_counts(layout, tenant, day)
            assert counts.conserved, counts
            assert (counts.read, counts.valid, counts.quarantined) == (
                report.read,
                report.valid,
                report.quarantined,
            )
            totals.update(read=report.read, valid=report.valid, quarantined=report.quarantined)
    return totals["read"], totals["valid"], totals["quarantined"]


def metric(url: str, name: str) -> float:
    status, text = get(f"{url}/metrics")
    assert status == 200
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_acknowledged_events_survive_sigkill_and_counts_conserve(
    trained: TrainedSystem, tmp_path
) -> None:
    settings = copy_for_serving(trained, tmp_path / "data")
    layout = DataLayout(settings.data_dir)

    # 1. Traffic with durable feedback, then SIGKILL the service's whole process group.
    with run_service(settings) as server, Traffic(server.url) as traffic:
        traffic.wait_for(acked=40)
        traffic.killed.set()
        server.kill()
        killed_at = len(traffic.acked)
    assert traffic.failures == []
    with pytest.raises(CRASH_ERRORS):
        urllib.request.urlopen(f"{server.url}/livez", timeout=2)
    acked = traffic.acked
    print(f"\n{len(acked)} durable clicks acknowledged ({killed_at} when SIGKILL was sent)")

    # 2. Every acknowledged click is on disk exactly once, in whole files only.
    # What a crash during a write leaves: a half-written temporary file.
    whole = raw_files(layout)[0]
    (whole.parent / f".{whole.stem}-crash.parquet.x1y2.tmp").write_bytes(
        whole.read_bytes()[: whole.stat().st_size // 2]
    )
    temporary = list(layout.raw_events.glob("*/*/.*.tmp"))
    files = raw_files(layout)
    assert files and all(path.name.startswith("serve-") for path in files)
    assert not set(files) & set(temporary)
    crashed = read_all(files)
    assert crashed["event_id"].is_unique
    clicks = Counter(
        crashed.loc[crashed["event_type"] == "click", ["request_id", "item_id"]].itertuples(
            index=False, name=None
        )
    )
    missing = [event for event in acked if clicks[event] != 1]
    assert missing == [], f"{len(missing)} acknowledged clicks not on disk exactly once"
    impressions = crashed.loc[crashed["event_type"] == "impression"]
    shown = impressions.groupby("request_id").size()
    assert (shown.loc[[request for request, _ in acked]] == K).all()
    assert impressions["value"].notna().all()  # the model's score
    print(
        f"on disk after SIGKILL: {len(crashed)} rows in {len(files)} files, "
        f"{len(clicks)} clicks; {len(temporary)} temporary files ignored"
    )

    # 3. The pipeline's validation reads exactly those files and conserves every row.
    read, valid, quarantined = validate_all(layout)
    assert (read, valid, quarantined) == (len(crashed), len(crashed), 0)

    # 4. Restart on the same directory: feedback on a response from before the crash is
    # accepted, and counts conserve from the service's counter to the pipeline's.
    before_restart = set(raw_files(layout))
    request_id, item = acked[0]
    user = crashed.loc[crashed["request_id"] == request_id, "user_id"].iloc[0]
    with run_service(settings) as server:
        status, stats = call(f"{server.url}/admin/stats", {})
        assert status == 200 and stats["restored_served_lists"] >= len(acked)
        late = {"request_id": request_id, "user_id": user, "item_id": item, "event_type": "view"}
        status, answer = call(f"{server.url}/feedback", {**late, "durable": True})
        assert status == 200 and answer == {
            "accepted": True,
            "request_id": request_id,
            "durable": True,
            "duplicate": False,
        }
        status, _ = call(f"{server.url}/feedback", {**late, "request_id": "never-served"})
        assert status == 404
        accepted = run_briefly(server)
    after = [path for path in raw_files(layout) if path not in before_restart]
    assert sum(pq.ParquetFile(path).metadata.num_rows for path in after) == accepted
    read, valid, quarantined = validate_all(layout)
    assert read == valid + quarantined == len(crashed) + accepted and quarantined == 0
    print(f"after restart: accepted {accepted} == {accepted} rows in {len(after)} new files")


def run_briefly(server: Server) -> int:
    """Non-durable traffic for a second, then the service's own counts: all written."""
    with Traffic(server.url, durable=False) as traffic:
        time.sleep(1)
    assert traffic.failures == []
    status, _ = call(f"{server.url}/admin/flush", {})
    assert status == 200
    status, stats = call(f"{server.url}/admin/stats", {})
    events = stats["events"]
    assert events["accepted"] == events["written"] == events["durable_seq"] > 0
    assert events["pending"] == events["failed_flushes"] == 0
    assert metric(server.url, "recloop_events_accepted_total") == events["accepted"]
    assert metric(server.url, "recloop_events_written_total") == events["written"]
    return events["accepted"]
