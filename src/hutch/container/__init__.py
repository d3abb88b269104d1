"""The container core: one module per verb (or family of verbs) over two data
shapes, the plans (:mod:`.plan`: the config turned into what the processes that
do the work take) and the record (:mod:`.record`: state.json and its status
transitions).  Host-side work plugs in as attachments (:mod:`.attach`).

Nothing is imported here: each verb imports only what it uses.
"""
