"""Does the broker serve a fetch from the middle of a record batch? A client-only check, no daemon.

Writes 10 batches of 10 records to a new one-partition topic (a flush after each batch, so each
is one stored batch at offsets 0, 10, 20, ...), then fetches from several offsets and prints the
first offsets delivered and the watermarks the broker reports. A broker that keeps the Kafka
contract delivers offset X first for a fetch at X, and reports a high watermark of 100.

  scripts/broker-fetch-check.py HOST:PORT      (needs confluent-kafka: pip install confluent-kafka)

Measured on tansu 0.6.0 with memory storage (RESULTS.md, "Delivery"): a fetch at 5 starts at 10,
at 15 at 20, at 95 returns nothing, and the high watermark reads 91 — a consumer group resuming
from a committed offset inside a batch never receives the rest of that batch.
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BATCHES, PER_BATCH = 10, 10


def write_batches(brokers: str, topic: str) -> list[int]:
    acked: list[int] = []
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 50})
    for batch in range(BATCHES):
        for i in range(PER_BATCH):
            producer.produce(topic, key=f"{batch}-{i}", value=b"x", partition=0,
                             callback=lambda err, msg: err is None and acked.append(msg.offset()))
        producer.flush(10)
    return acked


def first_offsets(brokers: str, topic: str, at: int, wait_s: float = 5.0) -> tuple[list[int], tuple]:
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "fetch-check",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, at)])
    got: list[int] = []
    deadline = time.time() + wait_s
    while time.time() < deadline and len(got) < 3:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            got.append(message.offset())
    watermarks = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
    consumer.close()
    return got, watermarks


def main() -> int:
    brokers = sys.argv[1]
    topic = "fetch-check-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": brokers})  # kept alive until the topic exists
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result()
    time.sleep(1)
    acked = write_batches(brokers, topic)
    print(f"acknowledged {len(acked)} records, offsets {min(acked)}..{max(acked)}")
    broken = False
    for at in [0, 5, 10, 15, 25, 95, 99]:
        got, watermarks = first_offsets(brokers, topic, at)
        ok = bool(got) and got[0] == at
        broken |= not ok
        print(f"fetch at {at:3}: first offsets delivered {got}; watermarks {watermarks}{'' if ok else '  <- wrong'}")
    print("the broker skips records fetched mid-batch" if broken else "every fetch started where it was asked")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
