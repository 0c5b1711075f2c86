"""Status's alarm text for an alarm type etcd does not name: its number, as
gogoproto prints it (a name lookup raised, and every Status failed)."""
from engine.api.maintenance import alarm_text


def test_alarm_text():
    assert alarm_text(123, 1) == "memberID:123 alarm:NOSPACE "
    assert alarm_text(123, 99) == "memberID:123 alarm:99 "
