"""The full-screen chat tool, driven headless through Textual's pilot against a real node."""

import asyncio
import functools
import signal
from collections.abc import Callable

import pytest
from textual.pilot import Pilot

from tests.chat_helpers import client_for
from tests.processes import Cluster, NodeProcess, run_async, wait_for
from tools.chat_app import ChatApp, ChatInput, MessagePane
from tools.chat_render import NEW_MESSAGES_MARKER
from tools.chat_state import Delivery

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


def joined(app: ChatApp, room: str) -> bool:
    view = app.state.rooms.get(room)
    return view is not None and bool(view.members)


def app_for(node: NodeProcess, rooms: list[str]) -> ChatApp:
    return ChatApp(client_for(node, user="ann"), "ann", rooms)


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
    tab; `/leave nosuchroom` says so; after the node restarts the tool serves its rooms."""

    async def scenario() -> None:
        app = app_for(node, ["lobby"])
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: joined(app, "lobby"), what="joined")
            await type_line(pilot, "/join bad room!")
            await until(pilot, lambda: "not a room name: 'bad room!'" in app.shown_text)
            await type_line(pilot, "/join " + "x" * 65)  # one past the longest name
            await until(pilot, lambda: "not a room name" in app.shown_text.split("bad room!")[-1])
            await type_line(pilot, "/leave nosuchroom")
            await until(pilot, lambda: "you are not in nosuchroom" in app.shown_text)
            assert list(app.state.rooms) == ["lobby"] and app.state.current == "lobby"
            node.stop()
            node.start()
            await until(pilot, lambda: app.client.connected, timeout_s=30.0, what="reconnect")
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
        app = ChatApp(client_for(mesh["n1"], mesh["n2"], user="ann"), "ann", ["lobby", "random"])
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
