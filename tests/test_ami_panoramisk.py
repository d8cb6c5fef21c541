"""The panoramisk 1.4 defects that made us write our own AMI client (ami_listener/manager.py).

Each scenario runs against our client and against plain panoramisk; the panoramisk run is a
strict xfail, so it keeps proving the defect (and tells us if a release ever fixes it).
Not panoramisk.testing: it rewrites a module-level EOL constant and breaks real Managers in
the same process; the peer is our fake AMI server over real sockets.
"""

import asyncio
import time

import pytest
from panoramisk import Manager

from callkpi.testing.fakeami import FakeAmi
from ami_listener.listener import Listener
from ami_listener.manager import AmiConnection, LoginError
from callkpi.config import AmiConfig

SECRET = "pw"
PANORAMISK_DEFECT = pytest.mark.xfail(strict=True, reason="panoramisk 1.4 defect")


@pytest.fixture
async def ami():
    server = await FakeAmi(secret=SECRET).start()
    yield server
    await server.close()


async def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return predicate()


# ---------------------------------------------------------------- event-level clients
class Ours:
    async def open(self, port, on_event):
        self.conn = await AmiConnection.open("127.0.0.1", port, username="callkpi",
                                             secret=SECRET, events="on",
                                             on_event=lambda m, _: on_event(m))

    def close(self):
        self.conn.close()


class Plain:
    async def open(self, port, on_event):
        self.manager = Manager(loop=asyncio.get_running_loop(), host="127.0.0.1", port=port,
                               username="callkpi", secret=SECRET, ping_delay=100)
        self.manager.register_event("*", lambda _, event: on_event(dict(event.items())))
        await self.manager.connect()
        assert await wait_for(lambda: self.manager.authenticated, 2)

    def close(self):
        self.manager.close()


CLIENTS = [pytest.param(Ours, id="ours"),
           pytest.param(Plain, id="panoramisk", marks=PANORAMISK_DEFECT)]


async def received_events(ami, client_class, chunks, on_event=None):
    seen = []

    def record(event):
        seen.append(event)
        if on_event:
            on_event(event)

    client = client_class()
    await client.open(ami.port, record)
    await asyncio.sleep(0.05)
    seen.clear()  # FullyBooted
    for chunk in chunks:
        await ami.write_raw(chunk)
        await asyncio.sleep(0.05)  # separate TCP segments
    await asyncio.sleep(0.1)
    still_connected = len(ami.logged_in) == 1
    client.close()
    return seen, still_connected


@pytest.mark.parametrize("client_class", CLIENTS)
async def test_multibyte_character_split_across_segments_survives(ami, client_class):
    event = "Event: Newchannel\r\nCallerIDName: José\r\n\r\n".encode()
    cut = event.index(b"\xa9")  # between the two bytes of the é
    seen, _ = await received_events(ami, client_class, [event[:cut], event[cut:]])
    assert [e["CallerIDName"] for e in seen] == ["José"]


@pytest.mark.parametrize("client_class", CLIENTS)
async def test_a_raising_callback_loses_neither_the_chunk_nor_the_connection(ami, client_class):
    chunk = b"".join(f"Event: E{n}\r\nUniqueid: {n}\r\n\r\n".encode() for n in range(3))

    def explode_once(event):
        if event["Event"] == "E0":
            raise RuntimeError("a bug in a handler")

    seen, still_connected = await received_events(ami, client_class, [chunk], explode_once)
    assert [e["Event"] for e in seen] == ["E0", "E1", "E2"]
    assert still_connected


@pytest.mark.parametrize("client_class", CLIENTS)
async def test_a_trailing_empty_header_is_kept(ami, client_class):
    seen, _ = await received_events(
        ami, client_class, [b"Event: Newchannel\r\nUniqueid: 1.1\r\nAccountCode: \r\n\r\n"])
    assert seen[0].get("AccountCode") == ""


@pytest.mark.parametrize("make_unconnected", [
    pytest.param(lambda: AmiConnection(lambda m, t: None), id="ours"),
    pytest.param(lambda: Manager(loop=asyncio.get_running_loop()), id="panoramisk",
                 marks=PANORAMISK_DEFECT),
])
async def test_an_action_before_connecting_is_a_connection_error(make_unconnected):
    client = make_unconnected()
    with pytest.raises(ConnectionError):
        client.send_action({"Action": "Ping"})


# ---------------------------------------------------------------- connection life cycle
class OurListener:
    def __init__(self, store, port, secret=SECRET):
        self.listener = Listener(store, AmiConfig(port=port, secret=secret, ping_interval_s=0.3,
                                                  reconnect_max_s=1), "pbx")
        self.task = asyncio.create_task(self.listener.run())

    def close(self):
        self.listener.stop()

    async def gave_up(self):
        """True when the client stopped with an error the caller can see."""
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 1)
        except LoginError:
            return True
        except asyncio.TimeoutError:
            return False
        return False


class PlainManager:
    def __init__(self, store, port, secret=SECRET):
        self.errors = []
        self.manager = Manager(loop=asyncio.get_running_loop(), host="127.0.0.1", port=port,
                               username="callkpi", secret=secret, ping_delay=1, ping_interval=1,
                               reconnect_timeout=1)
        self.manager.connect()

    def close(self):
        self.manager.close()

    async def gave_up(self):
        await asyncio.sleep(1)
        return False  # it has no way to report a rejected login: it just retries


LIFE_CYCLE = [pytest.param(OurListener, id="ours"),
              pytest.param(PlainManager, id="panoramisk", marks=PANORAMISK_DEFECT)]


@pytest.mark.parametrize("client_class", LIFE_CYCLE)
async def test_a_dead_half_open_peer_is_detected(ami, store, client_class):
    client = client_class(store, ami.port)
    assert await wait_for(lambda: bool(ami.logged_in), 2)
    ami.answer_pings = False  # connection open, peer silent
    reconnected = await wait_for(lambda: ami.connections >= 2, 3.5)
    client.close()
    assert reconnected


@pytest.mark.parametrize("client_class", LIFE_CYCLE)
async def test_close_stops_a_pending_reconnect(ami, store, client_class):
    client = client_class(store, ami.port)
    assert await wait_for(lambda: bool(ami.logged_in), 2)
    await ami.close()  # Asterisk goes away: reconnecting fails, a retry is pending
    await asyncio.sleep(0.3)
    client.close()
    back = await FakeAmi(secret=SECRET).start(port=ami.port)
    await asyncio.sleep(1.5)
    await back.close()
    assert back.connections == 0


@pytest.mark.parametrize("client_class", LIFE_CYCLE)
async def test_a_rejected_login_is_reported_and_not_retried(ami, store, client_class):
    client = client_class(store, ami.port, secret="wrong")
    gave_up = await client.gave_up()
    await asyncio.sleep(1.2)
    client.close()
    assert ami.logins == 1  # not retried
    assert gave_up  # and the caller is told
