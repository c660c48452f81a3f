"""A TCP proxy that can blackhole: while blackholed it accepts connections and reads bytes but
forwards nothing (in either direction) until restored, as a network partition does to TCP
(the peers see silence, not a reset; retransmission delivers the bytes once it heals).
It can also cut a connection between a command and its reply (`cut_next_reply`): the server
ran the command, the client sees its connection drop and cannot know whether it ran."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class BlackholeProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut = threading.Event()
        self.cuts = 0

    def start(self) -> BlackholeProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def blackhole(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def cut_next_reply(self) -> None:
        """The next bytes the server sends on any connection are dropped and that client's
        connection closed (once)."""
        self._cut.set()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _close(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await self._open.wait()  # a connection made during the partition waits for it to heal
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer),
                                 self._pipe(up_reader, writer, replies=True))
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    replies: bool = False) -> None:
        try:
            while data := await reader.read(65536):
                await self._open.wait()  # held, not dropped: TCP would retransmit it
                if replies and self._cut.is_set():
                    self._cut.clear()
                    self.cuts += 1
                    break  # the reply is dropped; finally closes the client's connection
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
