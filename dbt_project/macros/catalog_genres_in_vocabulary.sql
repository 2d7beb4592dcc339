{% test catalog_genres_in_vocabulary(model) %}
{#- Genres in the catalog that the `genres` seed does not list: they get no affinity slot. -#}
select distinct genre
from {{ model }}
where genre not in (select genre from {{ ref('genres') }})
{% endtest %}
