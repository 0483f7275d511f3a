"""The full-screen chat tool, driven headless through Textual's pilot against a real node."""

import asyncio
import contextlib
import functools
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from textual import events
from textual.keys import _character_to_key
from textual.pilot import Pilot

from mesh.client.chat_client import ChatClient
from mesh.client.connection import NodeError, parse_servers
from tests.chat_helpers import TEST_SETTINGS, client_for
from tests.processes import Cluster, NodeProcess, run_async, wait_for
from tools.chat_app import ChatApp
from tools.chat_keys import default_key_map, load_key_map
from tools.chat_render import NEW_MESSAGES_MARKER
from tools.chat_state import Delivery
from tools.chat_widgets import ChatInput, HelpScreen, MessagePane

pytestmark = pytest.mark.processes

FAST_SENDS = ["--sends-per-s", "100000", "--send-burst", "100000"]


@pytest.fixture
def node(cluster: Cluster) -> NodeProcess:
    node = cluster.add("n1", options=FAST_SENDS).start()
    wait_for(node.accepts_clients, 10.0, node.log)
    return node


async def until(
    pilot: Pilot[None], condition: Callable[[], object], timeout_s: float = 10.0, what: str = ""
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            app = pilot.app
            assert isinstance(app, ChatApp)
            raise AssertionError(f"not within {timeout_s}s: {what}\nscreen:\n{app.shown_text}")
        await pilot.pause(0.05)


async def type_line(pilot: Pilot[None], text: str) -> None:
    chat_input = pilot.app.query_one(ChatInput)
    chat_input.value = text
    chat_input.cursor_position = len(text)
    await pilot.press("enter")


async def burst(pilot: Pilot[None], *keys: str) -> None:
    """Keys as a terminal delivers a burst (`send-keys '/jo' Tab`, a paste): every one
    queued before the app handles the first. (pilot.press waits for the app between keys.)"""
    for key in keys:
        name = _character_to_key(key) if len(key) == 1 and not key.isalnum() else key
        pilot.app.post_message(events.Key(name, key if len(key) == 1 else None))
    await pilot.pause()


def joined(app: ChatApp, room: str) -> bool:
    view = app.state.rooms.get(room)
    return view is not None and bool(view.members)


def app_for(node: NodeProcess, rooms: list[str]) -> ChatApp:
    # The default keys: a keys.toml of the machine's user must not change the test.
    return ChatApp(client_for(node, user="ann"), "ann", rooms, default_key_map())


def test_join_send_receive_and_unread_counts(node: NodeProcess) -> None:
    async def scenario() -> None:
        app = app_for(node, ["lobby", "random"])
        async with app.run_test(size=(110, 30)) as pilot, client_for(node, user="bob") as bob:
            await until(
                pilot,
                lambda: (
                    app.client.connected
                    and "random" in app.state.rooms
                    and app.state.rooms["random"].members
                ),
                what="joined both rooms",
            )
            await type_line(pilot, "hello from ann")
            await until(
                pilot,
                lambda: "ann: hello from ann" in app.shown_text and "sending" not in app.shown_text,
                what="own message confirmed",
            )
            await bob.join("lobby")
            await until(pilot, lambda: "bob joined" in app.shown_text, what="join notice")
            await bob.typing("lobby")
            typing_line = app.query_one("#typing")
            await until(
                pilot, lambda: "bob is typing" in str(typing_line.render()), what="typing indicator"
            )
            await bob.send("lobby", "hi ann")
            await until(pilot, lambda: "bob: hi ann" in app.shown_text, what="bob's message")
            await bob.send("random", "over here")
            await until(pilot, lambda: app.state.rooms["random"].unread == 1, what="unread")
            assert "random (1)" in str(app.query_one("#rooms").render())
            await pilot.press("ctrl+n")
            assert app.state.current == "random"
            assert "bob: over here" in app.shown_text
            assert app.state.rooms["random"].unread == 0
            await pilot.press("alt+1")
            assert app.state.current == "lobby"

    run_async(scenario())


def test_a_bad_join_or_leave_changes_nothing_and_survives_a_restart(
    cluster: Cluster, node: NodeProcess
) -> None:
    """`/join bad room!` is an error line, never a tab; a join the node refuses leaves no
    tab; `/leave nosuchroom` says so; after the node restarts the tool serves its rooms,
    connects once (no loop over a room it could not join) and rejoins only its own."""

    async def scenario() -> None:
        async with client_for(node, user="owner") as owner:
            await owner.change_room("club", "create", value="invite")
        app = app_for(node, ["lobby"])
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: joined(app, "lobby"), what="joined")
            await type_line(pilot, "/join bad room!")
            await until(pilot, lambda: "not a room name: 'bad room!'" in app.shown_text)
            await type_line(pilot, "/join " + "x" * 65)  # one past the longest name
            await until(pilot, lambda: "not a room name" in app.shown_text.split("bad room!")[-1])
            await type_line(pilot, "/leave bad room!")
            await until(pilot, lambda: app.shown_text.count("not a room name") == 3)
            await type_line(pilot, "/leave nosuchroom")
            await until(pilot, lambda: "you are not in nosuchroom" in app.shown_text)
            await type_line(pilot, "/join club")  # invite-only: the node refuses
            await until(pilot, lambda: "could not join club: forbidden" in app.shown_text)
            assert list(app.state.rooms) == ["lobby"] and app.state.current == "lobby"
            assert app.client.last_seen("club") is None  # nothing left to rejoin
            node.stop()
            node.start()
            await until(pilot, lambda: app.client.connected, timeout_s=30.0, what="reconnect")
            await pilot.pause(3.0)  # a loop of refused rejoins would reconnect within this
            assert (app.client.connected, app.client.reconnects) == (True, 1)
            await type_line(pilot, "after the restart")
            await until(pilot, lambda: "after the restart" in app.shown_text)
            async with client_for(node, user="bob") as bob:
                for _ in range(100):  # bounded: about 10 s
                    page = await bob.history("lobby", limit=5)
                    if any(m.body == "after the restart" for m in page.messages):
                        break
                    await pilot.pause(0.1)
                else:
                    raise AssertionError("the line sent after the restart never arrived")
            assert list(app.state.rooms) == ["lobby"]

    run_async(scenario(), timeout_s=90.0)


def test_scrolling_to_the_top_loads_older_pages_without_jumping(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with client_for(node, user="bob") as bob:
            for n in range(130):
                await bob.send("lobby", f"old {n:03d}")
        app = app_for(node, ["lobby"])
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: "old 129" in app.shown_text, what="the newest page")
            assert "old 079" not in app.shown_text  # only the newest 50 at first
            pane = app.query_one(MessagePane)
            pane.scroll_home(animate=False)
            await until(pilot, lambda: "old 079" in app.shown_text, what="an older page")
            # The view moved down by what was added above it: still reading the same lines.
            await until(pilot, lambda: pane.scroll_y > 10, what="scroll kept in place")
            pane.scroll_home(animate=False)
            await until(pilot, lambda: "old 000" in app.shown_text, what="the room's start")
            await until(pilot, lambda: app.state.rooms["lobby"].history_exhausted)
            assert app.shown_text.count("old 050") == 1

    run_async(scenario())


def test_commands_completion_and_recall(node: NodeProcess) -> None:
    async def scenario() -> None:
        app = app_for(node, ["lobby"])
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: joined(app, "lobby"), what="joined")
            chat_input = app.query_one(ChatInput)
            chat_input.value = "/wh"
            await pilot.press("tab")
            assert chat_input.value == "/who "
            await pilot.press("enter")
            await until(pilot, lambda: "in lobby: ann" in app.shown_text, what="/who output")
            await type_line(pilot, "/join kitchen")
            await until(
                pilot,
                lambda: app.state.current == "kitchen" and joined(app, "kitchen"),
                what="/join",
            )
            await type_line(pilot, "/me waves")
            await until(pilot, lambda: "* ann waves" in app.shown_text, what="/me")
            await type_line(pilot, "/rooms")
            await until(pilot, lambda: "your rooms: kitchen, lobby" in app.shown_text)
            await type_line(pilot, "/help")
            await until(pilot, lambda: "/history N" in app.shown_text, what="/help")
            await type_line(pilot, "/nonsense")
            await until(pilot, lambda: "not a command: /nonsense" in app.shown_text)
            await pilot.press("up")
            assert chat_input.value == "/me waves"
            await type_line(pilot, "/leave")
            await until(pilot, lambda: "kitchen" not in app.state.rooms, what="/leave")
            assert app.state.current == "lobby"

    run_async(scenario())


def test_a_node_killed_and_restarted_under_the_app_loses_and_doubles_nothing(
    node: NodeProcess,
) -> None:
    async def scenario() -> None:
        app = app_for(node, ["lobby"])
        bob = client_for(node, user="bob")
        async with app.run_test(size=(100, 40)) as pilot, bob:
            await until(pilot, lambda: app.client.connected and joined(app, "lobby"))
            for n in range(5):
                await bob.send("lobby", f"bob before {n}")
            node.signal(signal.SIGKILL)
            await until(pilot, lambda: app.connection == "disconnected", what="noticed the kill")
            # Typed while the node is down: shown as pending.
            await type_line(pilot, "ann during the outage")
            assert any(
                line.delivery is Delivery.PENDING
                for line in app.state.rooms["lobby"].lines.values()
            )
            node.process.wait(timeout=5)  # type: ignore[union-attr]
            node.start()
            for n in range(5):
                await bob.send("lobby", f"bob after {n}")
            expected = [f"bob before {n}" for n in range(5)] + [f"bob after {n}" for n in range(5)]
            await until(
                pilot,
                lambda: (
                    all(body in app.shown_text for body in expected)
                    and "ann: ann during the outage" in app.shown_text
                    and "sending" not in app.shown_text
                ),
                timeout_s=20,
                what="everything after the restart",
            )
            for body in [*expected, "ann during the outage"]:
                assert app.shown_text.count(f": {body}") == 1, body
            assert "resumed" in app.shown_text

    run_async(scenario(), timeout_s=60)


# ESC sequences (clear screen, set title), BEL, a newline, a bidi override and a C1 CSI.
HOSTILE_BODY = "hi\x1b[2J\x1b]0;owned\x07\nsecond line\u202eevil\x9b31m"


def test_a_hostile_body_and_name_are_shown_escaped_on_one_line(node: NodeProcess) -> None:
    async def scenario() -> None:
        app = app_for(node, ["lobby"])
        # "[/]" is a valid user name, and Rich markup if shown as a str: it must not break.
        mallory = client_for(node, user="[/]mallory")
        async with app.run_test(size=(110, 30)) as pilot, mallory:
            await until(pilot, lambda: app.client.connected and joined(app, "lobby"))
            await mallory.join("lobby")
            await mallory.typing("lobby")
            await mallory.send("lobby", HOSTILE_BODY)
            await until(pilot, lambda: "[/]mallory: hi" in app.shown_text, what="the message")
            (line,) = [text for text in app.shown_text.splitlines() if "mallory: hi" in text]
            assert line.endswith(
                "[/]mallory: hi\\x1b[2J\\x1b]0;owned\\x07⏎second line\\u202eevil\\x9b31m"
            )
            assert not any(
                ord(character) < 0x20 or 0x7F <= ord(character) <= 0x9F or character == "\u202e"
                for character in app.shown_text.replace("\n", "")
            )
            await until(
                pilot,
                lambda: "[/]mallory" in str(app.query_one("#members").render()),
                what="the member list",
            )

    run_async(scenario())


def test_reply_edit_react_and_delete_from_the_chat_tool_reach_another_client(
    node: NodeProcess,
) -> None:
    async def scenario() -> None:
        app = app_for(node, ["lobby"])
        async with app.run_test(size=(110, 30)) as pilot, client_for(node, user="bob") as bob:
            await bob.join("lobby")
            await until(pilot, lambda: joined(app, "lobby"), what="joined")
            asked = await bob.send("lobby", "lunch?")
            await until(pilot, lambda: "bob: lunch?" in app.shown_text, what="bob's message")
            await type_line(pilot, "/react 🍕")
            await until(pilot, lambda: "[🍕 1]" in app.shown_text, what="own reaction shown")
            await type_line(pilot, "/reply yes, at noon")
            await until(pilot, lambda: "↳ bob: lunch?" in app.shown_text, what="the reply's quote")
            await until(pilot, lambda: "ann: yes, at noon" in app.shown_text, what="reply shown")
            await pilot.press("up")  # on an empty line: our last message, ready to edit
            chat_input = app.query_one(ChatInput)
            assert chat_input.value == "/edit yes, at noon"
            chat_input.value = "/edit yes, at one"
            await pilot.press("enter")
            await until(
                pilot, lambda: "ann: yes, at one (edited)" in app.shown_text, what="edit shown"
            )
            await type_line(pilot, "/delete")
            await until(pilot, lambda: "ann: (deleted)" in app.shown_text, what="delete shown")
            await type_line(pilot, "/edit nothing of mine is left")
            await until(pilot, lambda: "no message to edit" in app.shown_text, what="refused")

            page = await bob.history("lobby")
            by_id = {message.id: message for message in page.messages}
            assert by_id[asked.id].reactions == {"🍕": ["ann"]}
            (reply,) = [message for message in page.messages if message.sender == "ann"]
            # A tombstone keeps the id, sender and time, and who deleted it when: no more.
            assert (reply.deleted is not None, reply.body, reply.reply_to) == (True, "", None)

    run_async(scenario(), timeout_s=60.0)


def test_unread_counts_come_from_the_node_and_hold_after_reconnecting_to_another(
    mesh: dict[str, NodeProcess],
) -> None:
    async def scenario() -> None:
        client = client_for(mesh["n1"], mesh["n2"], user="ann")
        app = ChatApp(client, "ann", ["lobby", "random"], default_key_map())
        bob = client_for(mesh["n3"], user="bob")
        phone = client_for(mesh["n3"], user="ann")  # ann's second device
        async with app.run_test(size=(110, 30)) as pilot, bob, phone:
            await until(
                pilot, lambda: joined(app, "lobby") and joined(app, "random"), what="joined"
            )
            await phone.join("random")
            for n in range(3):
                await bob.send("random", f"news {n}")
            await until(pilot, lambda: app.state.rooms["random"].unread == 3, what="3 unread")
            await phone.mark_read("random")
            await until(
                pilot, lambda: app.state.rooms["random"].unread == 0, what="the phone's mark"
            )

            mesh["n1"].signal(signal.SIGKILL)
            later = [await bob.send("random", f"later {n}") for n in range(2)]
            await phone.mark_read("random", later[0].id)
            await until(
                pilot,
                lambda: app.client.node == "n2" and app.state.rooms["random"].unread == 1,
                timeout_s=20,
                what="the node's count after reconnecting to n2",
            )
            assert "random (1)" in str(app.query_one("#rooms").render())
            await pilot.press("ctrl+n")
            lines = app.shown_text.splitlines()
            assert lines[lines.index(NEW_MESSAGES_MARKER) + 1].endswith("later 1")

    run_async(scenario(), timeout_s=60)


def _shows(app: ChatApp, text: str) -> bool:
    return text in app.shown_text


def test_moderation_commands_change_the_room_and_show_as_notices(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with client_for(node, user="ann") as owner:
            await owner.change_room("club", "create", value="invite")
        app = app_for(node, ["club"])
        async with app.run_test(size=(110, 30)) as pilot, client_for(node, user="bob") as bob:
            await until(pilot, lambda: joined(app, "club"), what="joined club")
            await type_line(pilot, "/invite bob")
            await until(pilot, lambda: "ann invited bob" in app.shown_text, what="invite notice")
            await bob.join("club")
            for command, notice in (
                ("/op bob", "ann made bob moderator"),
                ("/topic plans for friday", "ann set the topic: plans for friday"),
                ("/mode read_only", "ann made club read-only"),
                ("/kick bob", "ann kicked bob"),
            ):
                await type_line(pilot, command)
                await until(pilot, functools.partial(_shows, app, notice), what=notice)
            await type_line(pilot, "/mode everyone")
            await until(
                pilot, lambda: "/mode open|invite|read_only" in app.shown_text, what="usage"
            )
            await type_line(pilot, "/ban ann")  # an owner cannot ban itself
            await until(pilot, lambda: "not done: forbidden" in app.shown_text, what="refusal")

    run_async(scenario())


class CuttableLink:
    """A TCP proxy to a node, in the test's own loop: `cut()` drops every connection and
    refuses new ones until `mend()`, as a partition would, while the node stays up."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.node.client_address.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        self._writers |= {writer, upstream_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))


def test_a_room_refused_on_rejoin_is_dropped_with_a_notice_not_a_reconnect_loop(
    node: NodeProcess,
) -> None:
    """Banned while cut off: after reconnecting, the room is told and skipped; the other
    rooms are rejoined and the client stays connected."""

    async def scenario() -> None:
        link = CuttableLink(node)
        await link.mend()
        async with client_for(node, user="owner") as owner:
            await owner.change_room("club", "create", value="invite")
            await owner.change_room("club", "invite", user="ann")
            client = ChatClient(
                parse_servers(f"127.0.0.1:{link.port}"), token="ann", settings=TEST_SETTINGS
            )
            app = ChatApp(client, "ann", ["lobby", "club"], default_key_map())
            async with app.run_test(size=(110, 30)) as pilot:
                await until(pilot, lambda: joined(app, "lobby") and joined(app, "club"))
                await link.cut()
                await until(pilot, lambda: not app.client.connected, what="cut off")
                await owner.change_room("club", "ban", user="ann")
                await link.mend()
                await until(
                    pilot,
                    lambda: "not rejoined club after reconnecting: forbidden" in app.shown_text,
                    timeout_s=20.0,
                    what="the refusal told",
                )
                await pilot.pause(3.0)  # a reconnect loop would show within this
                assert (app.client.connected, app.client.reconnects) == (True, 1)
                assert app.client.last_seen("club") is None
                assert app.shown_text.count("not rejoined club") == 1
                await pilot.press("alt+1")
                await type_line(pilot, "still here")
                await until(pilot, lambda: "ann: still here" in app.shown_text, what="lobby")
                await until(pilot, lambda: "sending" not in app.shown_text, what="stored")
                # Let back in, /join on the tab still open joins again (not only switches).
                await owner.change_room("club", "unban", user="ann")
                with contextlib.suppress(NodeError):  # the ban may have kept the invitation
                    await owner.change_room("club", "invite", user="ann")
                await type_line(pilot, "/join club")
                await until(pilot, lambda: app.client.in_room("club"), what="club joined again")
                assert app.client.in_room("club") and app.state.current == "club"
                await link.cut()

    run_async(scenario(), timeout_s=90.0)


def test_keys_switch_rooms_scroll_the_log_and_escape_closes_help(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with client_for(node, user="bob") as bob:
            for n in range(80):
                await bob.send("lobby", f"line {n:03d}")
        app = app_for(node, ["lobby", "random", "kitchen"])
        # A low screen: a page up from the bottom stays clear of the top (and older lines).
        async with app.run_test(size=(100, 20)) as pilot:
            rooms = ("lobby", "random", "kitchen")
            await until(pilot, lambda: all(joined(app, room) for room in rooms), what="joined")
            chat_input = app.query_one(ChatInput)
            for key, room in (
                ("alt+3", "kitchen"),
                ("alt+1", "lobby"),
                ("ctrl+p", "kitchen"),  # the previous room, not Textual's command palette
                ("ctrl+n", "lobby"),
                ("alt+right", "random"),
                ("alt+left", "lobby"),
                ("alt+2", "random"),
                ("inverted_exclamation_mark", "lobby"),  # ESC 1, as tmux sends Alt-1
            ):
                await pilot.press(key)
                assert (key, app.state.current) == (key, room)
                assert len(app.screen_stack) == 1 and chat_input.value == ""

            pane = app.query_one(MessagePane)
            await until(pilot, lambda: pane.max_scroll_y > 0 and pane.scroll_y == pane.max_scroll_y)
            # Switching rooms loaded nothing older: only scrolling a long log up does.
            assert "line 029" not in app.shown_text
            bottom = pane.scroll_y
            await pilot.press("pageup")
            await until(pilot, lambda: pane.scroll_y < bottom, what="PageUp scrolled up")
            await pilot.press("pagedown")
            await until(pilot, lambda: pane.scroll_y == bottom, what="PageDown scrolled down")
            chat_input.value = "typed"
            await pilot.press("home")  # with text, Home is the cursor's
            assert chat_input.cursor_position == 0 and pane.scroll_y == bottom
            chat_input.value = ""
            await pilot.press("home")  # on an empty line: the top of the log, and older lines
            await until(pilot, lambda: "line 000" in app.shown_text, what="Home loaded older")
            await pilot.press("end")
            await until(pilot, lambda: pane.scroll_y == pane.max_scroll_y > 0, what="End")
            await pilot.press("ctrl+home")
            await until(pilot, lambda: pane.scroll_y == 0, what="Ctrl-Home")
            await pilot.press("ctrl+end")
            await until(pilot, lambda: pane.scroll_y == pane.max_scroll_y, what="Ctrl-End")

            await pilot.press("f1")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen) and len(app.screen_stack) == 1

    run_async(scenario())


def test_tab_completes_keys_that_arrive_in_a_burst(node: NodeProcess) -> None:
    async def scenario() -> None:
        app = app_for(node, ["lobby", "kitchen"])
        async with app.run_test(size=(100, 30)) as pilot, client_for(node, user="bob") as bob:
            await until(pilot, lambda: joined(app, "lobby"), what="joined")
            await bob.join("lobby")
            await until(pilot, lambda: "bob" in app.state.rooms["lobby"].members)
            chat_input = app.query_one(ChatInput)
            await pilot.press("/", "j", "o", "tab", "k", "i", "tab")
            assert chat_input.value == "/join kitchen "
            chat_input.value = ""
            await burst(pilot, "/", "j", "o", "tab", "k", "i", "tab")  # no pause between
            assert chat_input.value == "/join kitchen "
            chat_input.value = ""
            await burst(pilot, "b", "o", "tab", "h", "i")
            assert chat_input.value == "bob: hi"
            chat_input.value = ""
            await burst(pilot, "/", "m", "s", "tab", "b", "tab")
            assert chat_input.value == "/msg bob "

    run_async(scenario())


def test_a_message_naming_the_user_is_highlighted_and_marks_its_room(node: NodeProcess) -> None:
    async def scenario() -> None:
        app = app_for(node, ["lobby", "random"])
        async with app.run_test(size=(110, 30)) as pilot, client_for(node, user="bob") as bob:
            await until(pilot, lambda: joined(app, "lobby") and joined(app, "random"))
            rooms = app.query_one("#rooms")
            await bob.send("random", "nothing for you here")
            await until(pilot, lambda: "random (1)" in str(rooms.render()), what="unread")
            assert "random (1) !" not in str(rooms.render())
            await bob.send("random", "Ann, are you there?")
            await until(pilot, lambda: "random (2) !" in str(rooms.render()), what="the mark")
            await bob.send("lobby", "hey ann")
            await until(pilot, lambda: "bob: hey ann" in app.shown_text)
            lines = app.state.rooms["lobby"].lines.values()
            assert [line.body for line in lines if line.highlight] == ["hey ann"]
            await pilot.press("alt+2")
            await until(pilot, lambda: "!" not in str(rooms.render()), what="mark cleared")

    run_async(scenario())


def test_msg_opens_the_direct_room_of_the_two_and_sends_there(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with client_for(node, user="eve") as eve:
            await eve.change_room("dm#ann#cy", "create", value="invite")  # a squatter
        app = app_for(node, ["lobby"])
        async with app.run_test(size=(110, 30)) as pilot, client_for(node, user="bob") as bob:
            await until(pilot, lambda: joined(app, "lobby"), what="joined")
            await type_line(pilot, "/msg")
            await until(pilot, lambda: "/msg USER TEXT" in app.shown_text, what="usage")
            await type_line(pilot, "/msg ann hi me")
            await until(pilot, lambda: "that is you" in app.shown_text)
            await type_line(pilot, "/msg cy hello")
            await until(pilot, lambda: "dm#ann#cy is someone else's room" in app.shown_text)
            assert list(app.state.rooms) == ["lobby"]
            await type_line(pilot, "/msg bob hello bob")
            await until(
                pilot,
                lambda: app.state.current == "dm#ann#bob" and "ann: hello bob" in app.shown_text,
                what="the direct room",
            )
            await until(pilot, lambda: "sending" not in app.shown_text, what="stored")
            await bob.join("dm#ann#bob")  # invited by ann's /msg
            page = await bob.history("dm#ann#bob")
            assert [message.body for message in page.messages] == ["hello bob"]
            async with client_for(node, user="eve") as eve:
                with pytest.raises(NodeError, match="forbidden"):
                    await eve.join("dm#ann#bob")
            await type_line(pilot, "/join lobby")
            await type_line(pilot, "/msg bob again")  # the same room, already open
            await until(pilot, lambda: "ann: again" in app.shown_text)
            assert app.state.current == "dm#ann#bob"

    run_async(scenario())


def test_retry_resends_the_last_line_that_failed(node: NodeProcess) -> None:
    async def scenario() -> None:
        owner = client_for(node, user="owner")
        app = app_for(node, ["board"])
        async with owner:
            await owner.change_room("board", "create", value="read_only")
            async with app.run_test(size=(110, 30)) as pilot:
                await until(pilot, lambda: joined(app, "board"), what="joined")
                await type_line(pilot, "/retry")
                await until(pilot, lambda: "nothing failed to send" in app.shown_text)
                await type_line(pilot, "hello board")
                await until(pilot, lambda: "(not sent: forbidden" in app.shown_text)
                await owner.change_room("board", "set_policy", value="open")
                await type_line(pilot, "/retry")
                await until(
                    pilot,
                    lambda: (
                        "ann: hello board" in app.shown_text
                        and "not sent" not in app.shown_text
                        and "sending…" not in app.shown_text
                    ),
                    what="the resend stored",
                )
                page = await owner.history("board")
                assert [message.body for message in page.messages] == ["hello board"]
                await type_line(pilot, "/retry")
                await until(pilot, lambda: app.shown_text.count("nothing failed") == 2)

    run_async(scenario())


def test_a_typing_line_ends_when_the_typist_s_message_arrives(node: NodeProcess) -> None:
    async def scenario() -> None:
        app = app_for(node, ["lobby"])
        async with app.run_test(size=(110, 30)) as pilot, client_for(node, user="bob") as bob:
            await until(pilot, lambda: joined(app, "lobby"), what="joined")
            await bob.join("lobby")
            typing_line = app.query_one("#typing")
            await bob.typing("lobby")
            await until(pilot, lambda: "bob is typing" in str(typing_line.render()))
            await bob.send("lobby", "done typing")
            await until(pilot, lambda: "bob: done typing" in app.shown_text)
            # Well before the 4 s a typing line otherwise shows.
            await until(pilot, lambda: not str(typing_line.render()).strip(), timeout_s=1.0)

    run_async(scenario())


def test_the_status_line_says_why_it_is_not_connected_and_when_it_retries(
    cluster: Cluster,
) -> None:
    node = cluster.add("n1", options=FAST_SENDS)  # not started yet: nothing listens

    async def scenario() -> None:
        app = app_for(node, ["lobby"])
        async with app.run_test(size=(140, 30)) as pilot:
            status = app.query_one("#status")
            await until(
                pilot,
                lambda: (
                    "not connected: connection refused" in str(status.render())
                    and "retrying in" in str(status.render())
                ),
                what="the reason and the retry",
            )
            node.start()
            await until(
                pilot, lambda: "ann @ n1" in str(status.render()), timeout_s=20, what="connected"
            )
            assert "connected" in str(status.render()) and "not connected" not in str(
                status.render()
            )

    run_async(scenario())


def test_keys_from_a_keys_file_and_one_line_for_its_mistakes(
    node: NodeProcess, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text('next_room = "ctrl+b"\nbogus = "ctrl+x"\nquit = "ctrl+"\n')

    async def scenario() -> None:
        client = client_for(node, user="ann")
        app = ChatApp(client, "ann", ["lobby", "random"], load_key_map(keys_file))
        async with app.run_test(size=(110, 30)) as pilot:
            await until(pilot, lambda: joined(app, "lobby") and joined(app, "random"))
            (problem,) = [line for line in app.shown_text.splitlines() if "keys.toml" in line]
            assert "unknown action 'bogus'" in problem and "quit: 'ctrl+'" in problem
            await pilot.press("ctrl+n")  # replaced by ctrl+b
            assert app.state.current == "lobby"
            await pilot.press("ctrl+b")
            assert app.state.current == "random"
            await pilot.press("ctrl+p")  # not named in the file: its default stands
            assert app.state.current == "lobby"

    run_async(scenario())
