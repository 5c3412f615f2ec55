"""SMLM config and params: round trips, the JSON Schema, fixed draws, one-sentence errors naming the field."""
from __future__ import annotations

import dataclasses
import json
import math

import jsonschema

from factory.store import schemas
import numpy as np
import pytest

from factory.errors import FactoryError
from factory.optics.config import Range
from factory.smlm import CameraMapsKind, SmlmConfig, SmlmParams
from factory.smlm.config import RANGE_FIELDS, RUN_FIELDS
from factory.smlm.params import BOUNDS, RECORD_FIELDS


def one_sentence(exc: pytest.ExceptionInfo, text: str) -> None:
    message = str(exc.value)
    assert text in message, message
    assert "\n" not in message and message.endswith("."), message


@pytest.mark.parametrize("cfg", [SmlmConfig(), SmlmConfig.defaults(),
                                 SmlmConfig(camera_maps="scmos", na=(1.3, 1.49), wavelength_nm=670, n_frames=7)])
def test_config_round_trips_through_json_and_matches_the_schema(cfg):
    d = json.loads(json.dumps(cfg.to_dict()))
    jsonschema.validate(d, schemas.load("smlm.v1.json"))
    assert SmlmConfig.from_dict(d) == cfg


def test_load_toml_and_json_give_the_same_config(tmp_path):
    (tmp_path / "c.toml").write_text('schema_version = 1\nn_frames = 50\nkde_sigma_nm = 15\ncamera_maps = "scmos"\n'
                                     'labels_per_um2 = {low = 30, high = 300, log = true}\nk_off_per_s = [20, 60]\n')
    (tmp_path / "c.json").write_text(json.dumps({"schema_version": 1, "n_frames": 50, "kde_sigma_nm": 15,
                                                 "camera_maps": "scmos", "k_off_per_s": [20, 60],
                                                 "labels_per_um2": {"low": 30, "high": 300, "log": True}}))
    a, b = SmlmConfig.load(tmp_path / "c.toml"), SmlmConfig.load(tmp_path / "c.json")
    assert a == b
    assert a.n_frames == 50 and a.camera_maps is CameraMapsKind.SCMOS and a.labels_per_um2 == Range(30.0, 300.0, True)


def test_draw_stays_in_ranges_and_always_consumes_the_same_draws():
    cfg = SmlmConfig.defaults()
    fixed = dataclasses.replace(cfg, k_on_per_s=0.3)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a, b = cfg.draw(rng_a), fixed.draw(rng_b)
    assert rng_a.random() == rng_b.random()  # same number of draws whether k_on is a range or fixed
    assert b.k_on_per_s == 0.3 and a.k_on_per_s != 0.3
    for name in RANGE_FIELDS:  # every other value is the same
        if name != "k_on_per_s":
            assert getattr(a, name) == getattr(b, name), name
    for _ in range(50):
        p = cfg.draw(rng_a)
        assert 30.0 <= p.labels_per_um2 <= 300.0 and 20.0 <= p.k_off_per_s <= 60.0 and 90 <= p.psf_sigma_nm <= 130
        assert p.n_frames == cfg.n_frames and p.kde_sigma_nm == cfg.kde_sigma_nm


def test_na_and_wavelength_set_the_psf_width():
    p = SmlmConfig(na=1.49, wavelength_nm=670).draw(np.random.default_rng(0))
    assert p.psf_sigma_nm == pytest.approx(0.21 * 670 / 1.49)
    assert p.na == 1.49 and p.wavelength_nm == 670.0


def test_params_record_has_every_field_with_units_and_round_trips():
    p = SmlmConfig.defaults().draw(np.random.default_rng(1))
    record = p.to_record()
    assert list(record) == [name for name, *_ in RECORD_FIELDS]
    assert json.loads(json.dumps(record)) == record
    assert SmlmParams.from_record({**record, "sample_id": 3}) == p


@pytest.mark.parametrize("fields,text", [
    ({"k_on_per_s": -1.0}, "k_on_per_s must be >= 0"),
    ({"k_off_per_s": 0.0}, "k_off_per_s must be > 0"),
    ({"k_bleach_per_s": [-1, 2]}, "k_bleach_per_s must be >= 0"),
    ({"n_frames": 0}, "n_frames must be >= 1"),
    ({"n_frames": 2.5}, "n_frames must be an integer"),
    ({"kde_sigma_nm": 0.0}, "kde_sigma_nm must be > 0"),
    ({"kde_sigma_nm": -3.0}, "kde_sigma_nm must be > 0"),
    ({"frame_time_ms": 0}, "frame_time_ms must be > 0"),
    ({"labels_per_um2": [300, 30]}, "labels_per_um2 range has low 300 above high 30"),
    ({"brightness_photons": 0}, "brightness_photons must be > 0"),
    ({"qe": 1.5}, "qe must be > 0 and <= 1"),
    ({"spurious_charge": -0.1}, "spurious_charge must be >= 0"),
    ({"n_frames": [10, 20]}, "n_frames must be one number for the whole run"),
    ({"camera_maps": "ccd"}, "camera_maps must be one of"),
    ({"photons": 100}, "unknown field 'photons'"),
    ({"k_on_per_s": 1e5, "k_off_per_s": 1e5}, "switch each emitter"),
])
def test_bad_config_fields_get_one_sentence_naming_the_field(tmp_path, fields, text):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema_version": 1, **fields}))
    with pytest.raises(FactoryError) as exc:
        SmlmConfig.load(path)
    one_sentence(exc, text)
    assert str(exc.value).startswith(str(path))


@pytest.mark.parametrize("d,text", [
    ({"schema_version": 1, "na": 1.4}, "na and wavelength_nm"),
    ({"schema_version": 1, "na": 1.4, "wavelength_nm": 670, "psf_sigma_nm": 90}, "either psf_sigma_nm or na"),
    ({"schema_version": 1, "offset_adu": 300, "bit_depth": 8}, "offset_adu"),
    ({"n_frames": 3}, "schema_version"),
])
def test_cross_field_rules(d, text):
    with pytest.raises(FactoryError) as exc:
        SmlmConfig.from_dict(d)
    one_sentence(exc, text)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_schema_and_code_enforce_the_same_bounds(name):
    """A value at a bound's closed end passes both checks; just outside, both refuse it."""
    schema, bound = schemas.load("smlm.v1.json"), BOUNDS[name]
    validator = jsonschema.Draft202012Validator(schema)
    integer = name in ("bit_depth", "downsample", "n_frames")
    inside = bound.low if not bound.low_open else (bound.low + 1 if integer else bound.low + 1e-6)
    assert not list(validator.iter_errors({"schema_version": 1, name: inside})), name
    outside = [bound.low - (1 if integer else 1e-6)] if not bound.low_open else [bound.low]
    if not math.isinf(bound.high):
        outside.append(bound.high + (1 if integer else bound.high * 1e-6))
    for value in outside:
        assert list(validator.iter_errors({"schema_version": 1, name: value})), (name, value)
        with pytest.raises(FactoryError):
            SmlmConfig.from_dict({"schema_version": 1, name: value})


def test_every_bounded_field_is_a_config_field():
    assert set(BOUNDS) == set(RANGE_FIELDS) | set(RUN_FIELDS)
