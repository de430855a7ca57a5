"""Upload deadlines, the charger, watching, progress: the recorder side of the archive."""
from __future__ import annotations

import io
import json
from datetime import date, datetime, timezone

from archive_harness import file_archive, run_cli  # noqa: F401 - fixtures
from conftest import replay_variant
from session_factory import make_session
from sessions.evidence.layout import out_root_of
from sessions.archive.upload import (Progress, UploadState, on_charger, overdue_sessions,
                                     upload_due)

UTC = timezone.utc
FRIDAY = datetime(2026, 1, 2, 15, 0, tzinfo=UTC)
assert FRIDAY.weekday() == 4


def test_upload_is_due_by_the_end_of_the_next_working_day():
    assert upload_due(date(2026, 1, 2), UTC) == datetime(2026, 1, 6, 0, 0, tzinfo=UTC)          # Fri -> Mon
    assert upload_due(date(2026, 1, 2), UTC, ["2026-01-05"]) == datetime(2026, 1, 7, 0, 0, tzinfo=UTC)
    assert upload_due(date(2026, 1, 6), UTC) == datetime(2026, 1, 8, 0, 0, tzinfo=UTC)          # Tue -> Wed


def test_overdue_sessions_count_weekends_holidays_and_finished_uploads(tmp_path):
    out = tmp_path / "rec"
    friday = make_session(out, started=FRIDAY)
    monday = make_session(out, started=datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    journaled = make_session(out, started=FRIDAY)
    st = UploadState(out_root_of(journaled), journaled.name)   # uploaded and journaled, deletion cut off
    st.append({"step": "plan", "upload_id": "u1", "archive": "file:///x"})
    st.append({"step": "journaled", "upload_id": "u1", "entry": 7})
    st.close()
    tuesday_noon = datetime(2026, 1, 6, 12, 0, tzinfo=UTC)
    late = overdue_sessions(out, tuesday_noon)
    assert [o.session_id for o in late] == [friday.name]
    assert late[0].due == datetime(2026, 1, 6, 0, 0, tzinfo=UTC) and late[0].overdue_by.total_seconds() == 12 * 3600
    assert overdue_sessions(out, tuesday_noon, ["2026-01-05"]) == []           # Monday was a holiday
    later = overdue_sessions(out, datetime(2026, 1, 7, 0, 1, tzinfo=UTC))
    assert [o.session_id for o in later] == [friday.name, monday.name]
    assert overdue_sessions(out, datetime(2026, 1, 5, 23, 59, tzinfo=UTC)) == []


def test_upload_overdue_command(tmp_path):
    out = tmp_path / "rec"
    s = make_session(out, started=FRIDAY)
    base = ["upload", "--overdue", "--out", out, "--json", "--now"]
    r = run_cli(base + ["2026-01-06T12:00:00Z"], {})
    assert r.rc == 1
    (item,) = r.json()
    assert item["session"] == s.name and item["overdue_hours"] == 12.0
    r = run_cli(base + ["2026-01-06T12:00:00Z", "--holiday", "2026-01-05"], {})
    assert r.rc == 0 and r.json() == []
    assert run_cli(base + ["2026-01-06T12:00:00Z", "--holiday", "5 Jan"], {}).rc == 2


def test_upload_overdue_counts_the_profiles_calendar(tmp_path):
    """A KZ centre: Nauryz (21-25 March 2026) is off, and a worked Saturday counts."""
    out = tmp_path / "rec"
    s = make_session(out, started=datetime(2026, 3, 20, 9, 0, tzinfo=UTC))          # Friday before Nauryz
    for name in ("plain", "kz", "worked"):
        (tmp_path / name).mkdir()
    plain = replay_variant(tmp_path / "plain")
    kz = replay_variant(tmp_path / "kz", append='\n[upload]\nholiday_country = "KZ"\n')
    worked = replay_variant(tmp_path / "worked", append='\n[upload]\nholiday_country = "KZ"\n'
                                                         'working_days = ["2026-03-21"]\n')
    tuesday = "2026-03-24T12:00:00Z"

    def overdue(profile):
        r = run_cli(["upload", "--overdue", "--profile", profile, "--out", out, "--json", "--now", tuesday], {})
        assert r.rc in (0, 1), r.err
        return [o["session"] for o in r.json()]
    assert overdue(plain) == [s.name]                 # due by the end of Monday 23 March
    assert overdue(kz) == []                          # due by the end of Thursday 26 March
    assert overdue(worked) == [s.name]                # Saturday 21 March was worked: due by its end


def test_on_charger_reads_the_power_supplies(tmp_path):
    assert on_charger(tmp_path) is None                       # a PC on mains reports no supply
    (tmp_path / "BAT0").mkdir()
    (tmp_path / "BAT0" / "status").write_text("Discharging\n")
    (tmp_path / "AC").mkdir()
    (tmp_path / "AC" / "online").write_text("0\n")
    (tmp_path / "USB").mkdir()
    (tmp_path / "USB" / "online").write_text("0\n")
    assert on_charger(tmp_path) is False
    (tmp_path / "USB" / "online").write_text("1\n")
    assert on_charger(tmp_path) is True


def test_watch_uploads_a_body_worn_recorder_only_on_the_charger(file_archive, tmp_path):
    a = file_archive
    profile = replay_variant(tmp_path, replace={'kind = "replay"': 'kind = "body-worn"'},
                             append="\n[retention]\nmonths = 6\n")
    power = tmp_path / "power"
    (power / "AC").mkdir(parents=True)
    (power / "AC" / "online").write_text("0\n")
    s = a.session()
    watch = ["upload", "--watch", "--profile", profile, "--out", a.out, "--power-supply-root", power,
             "--rounds", "1", "--interval", "0", "--json"]
    r = a.cli(*watch, user="car7")
    assert r.rc == 0, r.err
    (line,) = [json.loads(x) for x in r.out.splitlines()]
    assert line["action"] == "not-charging" and "1 session" in line["message"]
    assert s.exists()
    (power / "AC" / "online").write_text("1\n")
    r = a.cli(*watch, user="car7")
    (line,) = [json.loads(x) for x in r.out.splitlines()]
    assert line["action"] == "uploaded", line
    assert [x["status"] for x in line["results"]] == ["uploaded"]
    assert not s.exists()
    found = a.cli("archive", "find", "--json", user="boss").json()
    assert found[0]["retention_months"] == 6                   # the profile keeps longer than 3 months
    r = a.cli(*watch, user="car7")
    assert json.loads(r.out)["action"] == "nothing"
    access = a.cli("archive", "journal", "list", "access", "--json").json()["entries"]
    assert [e["command"] for e in access].count("upload") == 1  # idle rounds do not touch the archive


def test_watch_waits_while_the_archive_is_unreachable(file_archive, tmp_path):
    a = file_archive
    conf = tmp_path / "down.toml"
    conf.write_text('[s3]\nendpoint_url = "http://127.0.0.1:9"\n[s3.credentials.recorder]\n'
                    'access_key_id = "k"\nsecret_access_key = "s"\n')
    conf.chmod(0o600)  # it holds a secret
    s = a.session()
    r = a.cli("upload", "--watch", "--to", "s3://examrec-down", "--out", a.out, "--rounds", "1", "--interval", "0",
              "--json", user="car7", env={"EXAMREC_ARCHIVE_CONFIG": str(conf)})
    assert r.rc == 0
    line = json.loads(r.out)
    assert line["action"] == "unreachable" and "127.0.0.1:9" in line["message"]
    assert s.exists()


def test_progress_bar_only_on_a_terminal():
    quiet = io.StringIO()
    p = Progress(quiet)
    p.start("S1", 1000)
    p.advance(1000)
    p.finish()
    assert quiet.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    p = Progress(tty)
    p.start("S1", 2_000_000)
    p.advance(2_000_000)
    p.finish()
    assert "\rS1" in tty.getvalue() and "100.0%" in tty.getvalue() and tty.getvalue().endswith("\n")


def test_pre_exam_checks_name_sessions_overdue_for_upload(tmp_path):
    """`examrec check` / `record` tell the examiner when older sessions still wait for upload
    (a warning: the exam may go on)."""
    from sessions.recorder.checks import upload_check
    out = tmp_path / "rec"
    assert upload_check(out, []).ok
    old = make_session(out, started=FRIDAY)                 # January 2026: long overdue
    make_session(out, started=datetime.now(UTC))            # today's: not yet due
    res = upload_check(out, [])
    assert not res.ok and not res.mandatory
    assert "1 session(s) overdue" in res.detail and old.name in res.detail and "examrec upload" in res.detail
