//! Next-generation consumer groups (KIP-848): the broker assigns partitions and members
//! reconcile towards the target assignment one heartbeat at a time.
