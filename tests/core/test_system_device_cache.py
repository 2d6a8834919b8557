"""device_info is measured at most once a second, however many sessions' status lines ask."""

from __future__ import annotations

from tl_core import system


def test_device_info_reuses_a_measurement_for_a_second(monkeypatch):
    measured = []
    clock = [1000.0]
    monkeypatch.setattr(system, "_measured", {})
    monkeypatch.setattr(system.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(system, "_measure", lambda index: measured.append(index) or
                        system.DeviceInfo("cpu", f"CPU {len(measured)}"))
    first = system.device_info()
    clock[0] += system.DEVICE_INFO_TTL_S / 2
    assert system.device_info() is first
    assert system.device_info(1).name == "CPU 2"  # another device: measured apart
    clock[0] += system.DEVICE_INFO_TTL_S
    assert system.device_info().name == "CPU 3"
    assert measured == [0, 1, 0]
