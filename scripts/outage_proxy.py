"""A TCP proxy in front of the broker that can cut it off: the broker outage of
scripts/broker-restart.sh without losing the broker's storage (tansu's in-memory engine would
lose it on a restart, and its SQLite engine fails on consumer-group updates).
  python3 scripts/outage_proxy.py LISTEN_PORT BROKER_PORT
SIGUSR1: outage — every connection is closed and new ones are refused. SIGUSR2: back."""
import asyncio
import signal
import sys

LISTEN, BROKER = int(sys.argv[1]), int(sys.argv[2])
connections = set()


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    try:
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", BROKER)
    except OSError:
        client_writer.close()
        return
    tasks = {asyncio.ensure_future(pipe(client_reader, broker_writer)),
             asyncio.ensure_future(pipe(broker_reader, client_writer))}
    connections.update(tasks)
    await asyncio.wait(tasks)
    connections.difference_update(tasks)


async def main():
    loop = asyncio.get_running_loop()
    state = {"server": await asyncio.start_server(handle, "127.0.0.1", LISTEN)}

    async def down():
        if state["server"] is not None:
            state["server"].close()
            state["server"] = None
        for task in list(connections):
            task.cancel()
        print("outage: connections cut", flush=True)

    async def up():
        if state["server"] is None:
            state["server"] = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
        print("back: accepting connections", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(down()))
    loop.add_signal_handler(signal.SIGUSR2, lambda: asyncio.ensure_future(up()))
    print(f"proxy 127.0.0.1:{LISTEN} -> 127.0.0.1:{BROKER}", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
