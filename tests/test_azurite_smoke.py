from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient


def test_queue_and_table_round_trip(storage_conn: str, unique_name: str) -> None:
    q = QueueClient.from_connection_string(storage_conn, unique_name)
    q.create_queue()
    q.send_message("hello")
    assert [m.content for m in q.receive_messages()] == ["hello"]
    t = TableServiceClient.from_connection_string(storage_conn).create_table(unique_name)
    t.upsert_entity({"PartitionKey": "p", "RowKey": "r", "state": "received"})
    assert t.get_entity("p", "r")["state"] == "received"
