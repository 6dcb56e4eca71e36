import json

import numpy as np
import pandas as pd
import pytest

from finscale.atomic import atomic_write_parquet
from finscale.data import DataError, Manifest, fetch_dataset, load_raw, validate_ohlcv, verify
from finscale.data.store import store_frame

GOOD = pd.DataFrame({
    "Date": ["2020-01-02", "2020-01-03", "2020-01-06"],
    "Open": [10.0, 11.0, 12.0], "High": [11.0, 12.0, 13.0],
    "Low": [9.5, 10.5, 11.5], "Close": [10.5, 11.5, 12.5], "Volume": [100, 200, 300],
})


def csv(tmp_path, frame, name="x.csv"):
    p = tmp_path / name
    frame.to_csv(p, index=False)
    return p


def with_(col, row, value, frame=GOOD):
    f = frame.copy().astype({col: object})
    f.loc[row, col] = value
    return f


BAD_CASES = [
    (GOOD.iloc[0:0], "empty data"),
    (GOOD.drop(columns=["High"]), "missing column.*High"),
    (GOOD.assign(close=GOOD["Close"]), "duplicated column"),
    (with_("Date", 1, "not-a-date"), "column Date, row 2: unparseable date 'not-a-date'"),
    (with_("Date", 1, None), "column Date, row 2: missing date"),
    (with_("Date", 2, "2020-01-03"), "duplicate date 2020-01-03"),
    (with_("Date", 1, "2019-12-31"), "dates not increasing"),
    (with_("Close", 1, "abc"), "column Close, row 2 .*2020-01-03.*non-numeric"),
    (with_("Open", 2, np.nan), "column Open, row 3 .*NaN/inf"),
    (with_("Open", 0, np.inf), "column Open, row 1 .*NaN/inf"),
    (with_("Low", 1, -1.0), "column Low, row 2 .*non-positive price"),
    (with_("High", 1, 11.2), "column High, row 2 .*below max\\(Open, Close\\)"),
    (with_("Low", 1, 11.2), "column Low, row 2 .*above min\\(Open, Close\\)"),
    (with_("Volume", 2, -5), "column Volume, row 3 .*negative volume"),
]


@pytest.mark.parametrize("frame, message", BAD_CASES)
def test_every_rule_rejects_and_writes_nothing(tmp_path, data_dir, frame, message):
    path = csv(tmp_path, frame)
    with pytest.raises(DataError, match=message) as info:
        fetch_dataset(f"file:{path}", data_dir)
    assert str(path) in str(info.value)
    assert not data_dir.exists() or not any(data_dir.rglob("*"))


def test_min_rows_and_volume_optional():
    with pytest.raises(DataError, match="3 rows, fewer than the minimum 10"):
        validate_ohlcv(GOOD, origin="t", min_rows=10)
    no_vol = GOOD.drop(columns=["Volume"])
    with pytest.raises(DataError, match="missing column.*Volume"):
        validate_ohlcv(no_vol, origin="t")
    out = validate_ohlcv(no_vol, origin="t", volume_optional=True)
    assert out["Volume"].isna().all()


def test_case_insensitive_columns_tz_dates_and_adjustment():
    f = GOOD.rename(columns=str.lower)
    f["date"] = pd.to_datetime(f["date"]).dt.tz_localize("America/New_York")
    f["adj close"] = f["close"] / 2
    out = validate_ohlcv(f, origin="t", adjusted=True)
    assert list(out.columns) == ["Date", "Open", "High", "Low", "Close", "Volume"]
    assert out["Date"].dt.tz is None and out["Date"].iloc[0] == pd.Timestamp("2020-01-02")
    np.testing.assert_allclose(out["Open"], GOOD["Open"] / 2)
    np.testing.assert_allclose(out["High"], GOOD["High"] / 2)
    np.testing.assert_allclose(out["Close"], GOOD["Close"] / 2)
    unadjusted = validate_ohlcv(f, origin="t")
    np.testing.assert_allclose(unadjusted["Close"], GOOD["Close"])
    with pytest.raises(DataError, match="Adj Close"):
        validate_ohlcv(GOOD, origin="t", adjusted=True)


def test_sample_fetch_and_manifest_round_trip(data_dir):
    e = fetch_dataset("sample:sp500", data_dir)
    assert (e["name"], e["rows"], e["first_date"], e["last_date"]) == ("sp500", 5031, "1999-01-04", "2018-12-31")
    doc = json.loads((data_dir / "manifest.json").read_text())
    assert doc["schema_version"] == 1 and doc["entries"][-1]["sha256"] == e["sha256"]
    frame = load_raw(data_dir, "sp500")
    assert len(frame) == 5031 and frame["Date"].is_monotonic_increasing
    assert verify(data_dir)[0]["status"] == "ok"
    # A second fetch appends; the latest entry wins.
    fetch_dataset("sample:nasdaq", data_dir, name="sp500")
    assert len(Manifest(data_dir).entries()) == 2
    assert Manifest(data_dir).latest("raw/sp500.parquet")["source"] == "sample:nasdaq"


def test_flipped_byte_fails_verify_and_load(data_dir):
    fetch_dataset("sample:sp500", data_dir)
    path = data_dir / "raw" / "sp500.parquet"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert verify(data_dir)[0]["status"] == "changed"
    with pytest.raises(DataError, match="sha256 differs"):
        load_raw(data_dir, "sp500")
    path.unlink()
    assert verify(data_dir)[0]["status"] == "missing"


def test_interrupted_write_keeps_previous_file_and_manifest(data_dir, sp500):
    e = fetch_dataset("sample:sp500", data_dir)
    before = (data_dir / e["path"]).read_bytes(), (data_dir / "manifest.json").read_bytes()

    def crashing_writer(frame, path):
        frame.iloc[:10].to_parquet(path)  # half the work done, then the process "dies"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store_frame(data_dir, e["path"], sp500, {"name": "sp500"}, writer=crashing_writer)
    assert (data_dir / e["path"]).read_bytes() == before[0]
    assert (data_dir / "manifest.json").read_bytes() == before[1]
    assert not [p for p in (data_dir / "raw").iterdir() if p.name.endswith(".tmp")]
    assert verify(data_dir)[0]["status"] == "ok"


def test_atomic_parquet_leaves_no_temp(tmp_path, sp500):
    atomic_write_parquet(sp500, tmp_path / "a.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]


def test_yfinance_offline_fails_fast(data_dir):
    import time

    start = time.monotonic()
    with pytest.raises(DataError, match="yfinance:SPY"):
        fetch_dataset("yfinance:SPY", data_dir)
    assert time.monotonic() - start < 30
    assert not data_dir.exists() or not any(data_dir.rglob("*.parquet"))


@pytest.mark.parametrize("spec", ["sp500", "sample:dax", "ftp:x", "file:"])
def test_bad_source_spec(data_dir, spec):
    with pytest.raises(DataError, match="source|sample"):
        fetch_dataset(spec, data_dir)


def test_cli_fetch_verify_and_duplicate_date(cli, tmp_path):
    dd = tmp_path / "d"
    r = cli("data", "fetch", "sample:sp500", "--data-dir", str(dd))
    assert r.returncode == 0, r.stderr
    assert "5,031 rows 1999-01-04..2018-12-31" in r.stdout
    assert cli("data", "verify", "--data-dir", str(dd)).returncode == 0
    listing = cli("data", "list", "--data-dir", str(dd))
    assert "raw/sp500.parquet" in listing.stdout and "5,031" in listing.stdout
    p = dd / "raw" / "sp500.parquet"
    p.write_bytes(p.read_bytes()[:-10] + b"0123456789")
    r = cli("data", "verify", "--data-dir", str(dd))
    assert r.returncode == 1 and "raw/sp500.parquet is changed" in r.stdout

    bad = csv(tmp_path, with_("Date", 2, "2020-01-03"))
    r = cli("data", "fetch", f"file:{bad}", "--data-dir", str(tmp_path / "e"))
    assert r.returncode == 1
    assert "duplicate date 2020-01-03" in r.stderr and "x.csv" in r.stderr
    assert not (tmp_path / "e").exists()


def test_env_var_data_dir(cli, tmp_path):
    r = cli("data", "fetch", "sample:nasdaq", env={"FINSCALE_DATA": str(tmp_path / "envdata")})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "envdata" / "raw" / "nasdaq.parquet").exists()


def test_cli_fetch_rejects_duplicate_columns_and_short_files(cli, tmp_path, sp500):
    long = sp500.head(300)
    dup = tmp_path / "dup.csv"
    text = long.to_csv(index=False).splitlines()
    header, rows = text[0] + ",Close", [line + "," + line.split(",")[4] for line in text[1:]]
    dup.write_text("\n".join([header, *rows]) + "\n")
    r = cli("data", "fetch", f"file:{dup}", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "duplicated column 'Close'" in r.stderr and "dup.csv" in r.stderr
    short = csv(tmp_path, long.head(8), "short.csv")
    r = cli("data", "fetch", f"file:{short}", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "8 rows, fewer than the minimum 250" in r.stderr
    assert not (tmp_path / "d").exists()
    ok = cli("data", "fetch", f"file:{short}", "--min-rows", "8", "--data-dir", str(tmp_path / "d"))
    assert ok.returncode == 0, ok.stderr
