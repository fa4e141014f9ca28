"""OpenAI's dialect of the API: `/v1/files` and `/v1/fine_tuning/jobs`, so scripts written for
OpenAI's fine-tuning API run against Trainyard with only `base_url` and `api_key` changed.

* `fine_tuning`: the body of a fine-tuning create and its mapping onto a `JobSpec`;
* `objects`: files, jobs, events and checkpoints in OpenAI's shapes;
* `errors`: OpenAI's error envelope, on these routes only;
* `routes`: the routes, thin over the platform's file, job and submission services.

There is one job store: a fine-tuning job *is* a Trainyard job, so `/v1/jobs` and
`/v1/fine_tuning/jobs` show the same jobs in two dialects.
"""
