"""util.archives.vault.glacier.Inventory: a vault inventory read as it streams in."""

from __future__ import annotations

import io
import json

from util.archives.vault.glacier import Inventory

# The shape of AWS's documented example of an inventory (Get Job Output, JSON).
EXAMPLE = {
    "VaultARN": "arn:aws:glacier:us-west-2:012345678901:vaults/examplevault",
    "InventoryDate": "2011-12-12T14:19:01Z",
    "ArchiveList": [
        {
            "ArchiveId": "DMTmICA2n5Tdqq5BV2z7og-A20xnpAPKt3UXwWxdWsn_D6auTUrW6kwy5Qyj9xd1MCE1m"
            "BYvMQ63LWaT8yTMzMaCxB_9VBWrW4Jw4zsvg5kehAPDVKcppUD1X7b24JukOr4mMAq-oA",
            "ArchiveDescription": "my archive1",
            "CreationDate": "2012-05-15T17:19:46.700Z",
            "Size": 2140123,
            "SHA256TreeHash": "6b9d4cf8697bd3af6aa1b590a0b27b337da5b18988dbcc619a3e608a554a1e62",
        },
        {
            "ArchiveId": "2lHzwhKhgF2JHyvCS-ZRuF08IQLuyB4265Hs3AXj9MoAIhz7tbXAvcFeHusgU_hViO1W"
            "eCBe0N5lsYYHRyZ7rrmRkNRuYrXUs_sjl2K8ume_7mKO_0i7C-uHE1oHqaW9d37pabXrSA",
            "ArchiveDescription": "my archive2",
            "CreationDate": "2012-05-15T17:21:39.339Z",
            "Size": 2140123,
            "SHA256TreeHash": "7f2fe580edb35154041fa3d4b41dd6d3adaef0c85d2ff6309f1d4b520eeecda3",
        },
    ],
}


class Trickle(io.RawIOBase):
    """A body that hands out a few bytes per read, as a slow network would."""

    def __init__(self, data: bytes):
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data.read(min(len(buffer), 7))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_an_inventory_streams_its_archives_and_its_date() -> None:
    inventory = Inventory(Trickle(json.dumps(EXAMPLE).encode()))
    archives = list(inventory.archives())
    assert archives == EXAMPLE["ArchiveList"]
    assert inventory.date == "2011-12-12T14:19:01Z"


def test_an_empty_vaults_inventory_has_no_archives() -> None:
    inventory = Inventory(io.BytesIO(json.dumps({**EXAMPLE, "ArchiveList": []}).encode()))
    assert list(inventory.archives()) == [] and inventory.date == EXAMPLE["InventoryDate"]
