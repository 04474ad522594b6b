"""Job ids and claim tokens stay unique across threads and forked processes."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

from khadem_nb._ids import new_job_id, new_token


def test_job_ids_are_32_hex_digits_and_unique_across_threads() -> None:
    with ThreadPoolExecutor(4) as pool:
        ids = [i for chunk in pool.map(lambda _: [new_job_id() for _ in range(5000)], range(4))
               for i in chunk]
    assert len(set(ids)) == len(ids) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_forked_child_draws_a_new_prefix() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what it would hand out next, then leave without cleanup
        os.write(write, f"{new_job_id()} {new_token()}".encode())
        os._exit(0)
    os.close(write)
    child_id, child_token = os.read(read, 200).decode().split()
    os.waitpid(pid, 0)
    os.close(read)
    parent_id, parent_token = new_job_id(), new_token()
    assert child_id[:20] != parent_id[:20]
    assert child_token.split("-")[0] != parent_token.split("-")[0]
