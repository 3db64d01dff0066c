"""Apache Kafka, single-node KRaft: broker config, topic definitions, launcher."""
