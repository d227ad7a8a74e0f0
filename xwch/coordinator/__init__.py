"""The coordinator: workers manager, tasks manager, scheduler, communication manager."""
